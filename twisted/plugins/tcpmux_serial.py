"""
The C{serial:} client endpoint string (C{--target serial:/dev/ttyUSB0:...});
see L{tcpmux.target.serial}.
"""

from tcpmux.target.serial import SerialClientParser

serialClientParser = SerialClientParser()
