"""``python -m devhost.servicebus``: run the local Service Bus until SIGINT or SIGTERM."""
import sys

from devhost.servicebus.server import main

sys.exit(main())
