def handle(event):
    """Called once per CloudEvent, in a worker process that stays up between events.

    event.id, event.source, event.type, event.subject, event.time, event.datacontenttype
    and event.dataschema are the event's attributes (None when absent); event.extensions is
    a dict of the others (traceparent, knativearrivaltime, your own); event.data is the data:
    parsed JSON for a JSON type, str for text/*, bytes otherwise (always bytes with
    RAW_BODY=true); event.data_bytes is the data as it arrived.

    Return the reply's data (a dict or list as JSON, a str, bytes), or (data, "reply.type")
    to choose the reply's type, or None for no reply (202). Raise DropEvent (from
    fwatchdog_events) for an event that must not be retried (400); any other exception is a
    500, which the broker retries. Secrets: from fwatchdog_sdk import get_secret.
    """
    return event.data
