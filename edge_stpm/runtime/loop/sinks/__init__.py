"""Outputs of the camera loop, one module each, behind one small interface (``base.Sink``).

Verdict sinks (events, the inspection record, PLC and MQTT outputs) take a result as soon as inference ends;
picture sinks (window, recording, NG snapshots, HTTP viewers) take it after the overlay is drawn. Each sink runs
on its own thread with its own bounded queue (``base.SinkRunner``), so a slow or failing sink never stalls
inference or another sink; what it drops or fails is counted.
"""
