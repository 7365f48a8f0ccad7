"""The demo backend of maestro-gateway: four small services in three stacks.

``inventory`` (grpcio), ``payments`` (grpclib + betterproto), ``shipping`` (Node.js grpc-js) and
``mailer`` (aiohttp, HTTP/JSON), each with the same fault-injection and call-recording control
plane (:mod:`demo.control`). Start them all with ``python -m demo.run`` (``make demo-services``),
or from tests with :func:`demo.harness.running_services`.
"""
