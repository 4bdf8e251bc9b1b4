from twisted.application.service import ServiceMaker

tcpmux = ServiceMaker(
    "tcpmux",
    "tcpmux.tap",
    "Share one target connection among many clients, one round trip at a time",
    "tcpmux",
)
