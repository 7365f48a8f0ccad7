"""The demo backend of maestro-gateway: five small services in four stacks.

``inventory`` (grpcio), ``payments`` (grpclib + betterproto), ``shipping`` (Node.js grpc-js),
``mailer`` (aiohttp, HTTP/JSON) and ``loyalty`` (synchronous grpcio, written for Maestro.go's
envelope protocol), each with the same fault-injection and call-recording control plane
(:mod:`demo.control`). Start them all with ``python -m demo.run`` (``make demo-services``),
or from tests with :func:`demo.harness.running_services`.
"""
