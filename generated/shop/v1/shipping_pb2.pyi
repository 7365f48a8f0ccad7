from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateShipmentRequest(_message.Message):
    __slots__ = ("order_id", "reservation_id", "address")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reservation_id: str
    address: str
    def __init__(self, order_id: _Optional[str] = ..., reservation_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Shipment(_message.Message):
    __slots__ = ("id", "tracking_number", "carrier")
    ID_FIELD_NUMBER: _ClassVar[int]
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    id: str
    tracking_number: str
    carrier: str
    def __init__(self, id: _Optional[str] = ..., tracking_number: _Optional[str] = ..., carrier: _Optional[str] = ...) -> None: ...

class CancelShipmentRequest(_message.Message):
    __slots__ = ("shipment_id",)
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    def __init__(self, shipment_id: _Optional[str] = ...) -> None: ...

class CancelShipmentResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...
