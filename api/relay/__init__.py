"""The unlock relay: the API's one MQTT session (commands out; acks, status, events in)."""
