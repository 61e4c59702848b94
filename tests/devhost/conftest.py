"""What the local host's tests share: a one-function queue app, and the status container named by
each test module's ``env`` fixture (``ST`` connection, ``CONTAINER`` name)."""
from __future__ import annotations

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient


def queue_app(on_message) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("work")
    @app.service_bus_queue_trigger(arg_name="msg", connection="SB", queue_name="%Q_IN%")
    def work(msg: func.ServiceBusMessage) -> None:
        on_message(msg.get_body().decode())

    return app


@pytest.fixture
def container(env):
    with BlobServiceClient.from_connection_string(env["ST"]) as service:
        client = service.get_container_client(env["CONTAINER"])
        client.create_container()
        yield client
