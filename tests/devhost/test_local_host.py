"""The local host drives functions the way the Functions host does, from their binding metadata."""
import time

import azure.functions as func
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from azure.storage.blob import BlobServiceClient

from devhost.host import HostConfig, LocalFunctionsHost
from shared.errors import ConfigurationError
from tests.polling import eventually

pytestmark = pytest.mark.long


def make_app(calls: list):
    app = func.FunctionApp()

    @app.function_name("tick")
    @app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%", use_monitor=True)
    def tick(timer: func.TimerRequest) -> None:
        calls.append(("tick", timer.past_due))

    @app.function_name("work")
    @app.service_bus_queue_trigger(arg_name="msg", connection="SB", queue_name="%Q_IN%")
    @app.service_bus_queue_output(arg_name="out", connection="SB", queue_name="%Q_OUT%")
    def work(msg: func.ServiceBusMessage, out: func.Out[str]) -> None:
        body = msg.get_body().decode()
        calls.append(("work", body, msg.message_id, msg.delivery_count))
        if body.startswith("fail"):
            raise RuntimeError("this message always fails")
        out.set(f"echo:{body}")

    @app.function_name("blob")
    @app.blob_trigger(arg_name="blob", path="%CONTAINER%/{name}.Status.txt", connection="ST")
    def blob(blob: func.InputStream) -> None:
        data = blob.read()
        calls.append(("blob", blob.name, data, blob.blob_properties["ETag"]))
        if data == b"poison":
            raise ValueError("cannot read this blob")

    return app


@pytest.fixture
def env(local_servicebus, storage_connection_string, unique_name):
    return {"TICK_SCHEDULE": "*/1 * * * * *", "SB": local_servicebus.connection_string,
            "Q_IN": unique_name("in"), "Q_OUT": unique_name("out"), "CONTAINER": unique_name("status"),
            "ST": storage_connection_string, "AzureWebJobsStorage": storage_connection_string}


@pytest.fixture
def calls():
    return []


@pytest.fixture
def host(env, calls, unique_name):
    with LocalFunctionsHost(make_app(calls), env, HostConfig(max_concurrent_calls=4),
                            host_id=unique_name("host"), poll_interval=0.1) as h:
        yield h




def _send(env, *bodies, message_id=None):
    with ServiceBusClient.from_connection_string(env["SB"]) as client, \
            client.get_queue_sender(env["Q_IN"]) as sender:
        sender.send_messages([ServiceBusMessage(b, message_id=message_id or f"m-{b}") for b in bodies])


def _receive_all(env, queue, sub_queue=None):
    with ServiceBusClient.from_connection_string(env["SB"]) as client, \
            client.get_queue_receiver(queue, sub_queue=sub_queue, max_wait_time=1) as receiver:
        messages = receiver.receive_messages(max_message_count=50, max_wait_time=1)
        for m in messages:
            receiver.complete_message(m)
        return messages


def test_timer_fires_on_demand_and_on_its_six_field_schedule(host, calls):
    """A timer runs when asked and then on its NCRONTAB schedule (seconds first)."""
    host.fire_timer("tick")
    assert calls == [("tick", False)]
    host.start()
    assert eventually(lambda: len([c for c in calls if c[0] == "tick"]) >= 3)
    host.stop()


def test_a_missed_occurrence_fires_once_past_due_after_a_restart(env, calls, unique_name):
    """With useMonitor, an occurrence missed while the host was down runs at start-up, marked past due."""
    host_id = unique_name("host")
    env = dict(env, TICK_SCHEDULE="0 0 0 * * *")   # midnight: long past since the last recorded run
    with LocalFunctionsHost(make_app(calls), env, host_id=host_id) as first:
        first.fire_timer("tick")
        first._save_timer_status("tick", first._load_timer_status("tick").replace(year=2000))
    with LocalFunctionsHost(make_app(calls), env, host_id=host_id) as second:
        second.start()
        assert eventually(lambda: len(calls) >= 2)
        time.sleep(0.3)                                   # room for a wrong second catch-up run
    assert calls == [("tick", False), ("tick", True)]


def test_queue_message_is_delivered_completed_and_output_binding_sent(host, env, calls, local_servicebus):
    """A message reaches the function with its id and delivery count, is completed, and its output is sent."""
    _send(env, "hello")
    assert host.drain_queue("work") == 1
    assert calls == [("work", "hello", "m-hello", 1)]
    assert local_servicebus.queue_depth(env["Q_IN"]) == 0
    assert [str(m) for m in _receive_all(env, env["Q_OUT"])] == ["echo:hello"]


def test_failing_message_is_abandoned_redelivered_then_dead_lettered(host, env, calls, local_servicebus):
    """An exception abandons the message; after MaxDeliveryCount it lands in the dead-letter queue."""
    _send(env, "fail-1")
    for _ in range(5):
        host.drain_queue("work", max_wait=0.3)
    counts = [c[3] for c in calls if c[0] == "work"]
    assert counts == [1, 2, 3]           # the session server's MaxDeliveryCount is 3
    dead = _receive_all(env, env["Q_IN"], sub_queue="deadletter")
    assert [m.dead_letter_reason for m in dead] == ["MaxDeliveryCountExceeded"]


def test_blob_trigger_fires_once_per_new_or_changed_blob(host, env, calls):
    """Each new or rewritten matching blob fires once; unchanged or non-matching blobs never do."""
    container = BlobServiceClient.from_connection_string(env["ST"]).get_container_client(env["CONTAINER"])
    container.create_container()
    container.upload_blob("job1/1.Status.txt", b"first")
    container.upload_blob("job1/1.Logs.txt", b"log lines")
    assert host.scan_blobs("blob") == 1
    assert host.scan_blobs("blob") == 0
    container.upload_blob("job1/1.Status.txt", b"second", overwrite=True)
    assert host.scan_blobs("blob") == 1
    assert [(c[1], c[2]) for c in calls] == [(f"{env['CONTAINER']}/job1/1.Status.txt", b"first"),
                                             (f"{env['CONTAINER']}/job1/1.Status.txt", b"second")]


def test_blob_receipts_survive_a_host_restart(env, calls, unique_name):
    """A restarted host does not re-run blobs it already processed (receipts live in storage)."""
    host_id = unique_name("host")
    container = BlobServiceClient.from_connection_string(env["ST"]).get_container_client(env["CONTAINER"])
    container.create_container()
    container.upload_blob("a.Status.txt", b"x")
    with LocalFunctionsHost(make_app(calls), env, host_id=host_id) as first:
        assert first.scan_blobs("blob") == 1
    with LocalFunctionsHost(make_app(calls), env, host_id=host_id) as second:
        assert second.scan_blobs("blob") == 0


def test_a_blob_that_keeps_failing_becomes_poison_and_stops_retrying(host, env, calls):
    """After poisonBlobThreshold failures the blob is recorded as poison and not invoked again."""
    container = BlobServiceClient.from_connection_string(env["ST"]).get_container_client(env["CONTAINER"])
    container.create_container()
    container.upload_blob("bad.Status.txt", b"poison")
    for _ in range(8):
        host.scan_blobs("blob")
    assert len(calls) == 5


def test_missing_setting_is_reported_by_name(env, calls):
    """A binding whose %SETTING% is not configured fails at start with the setting's name."""
    del env["Q_IN"]
    with pytest.raises(ConfigurationError, match="setting Q_IN .*work"):
        LocalFunctionsHost(make_app(calls), env)


def test_a_new_app_never_gets_the_functions_of_a_collected_one():
    """Each app object is read for itself, even when a collected app's memory address is reused."""
    import gc

    from azure.functions.timer import TimerRequest

    from devhost.host import read_functions

    # The heap as it stands is set aside, so each collection walks only the apps made here: fifty full
    # collections of a test process's heap took a minute on a busy machine, these take milliseconds.
    gc.freeze()
    try:
        for _ in range(50):
            seen: list = []
            app = make_app(seen)
            tick = next(spec for spec in read_functions(app) if spec.name == "tick")
            tick.call(timer=TimerRequest(past_due=False))
            assert seen == [("tick", False)]
            del app, tick
            gc.collect()
    finally:
        gc.unfreeze()
