"""The line's I/O, torch-free: the PLC handshake (``plc.py``: its state, the PLC-triggered source, the Modbus TCP
server and the sink that answers the PLC), OPC UA (``opcua.py``) and the run's line set-up (``setup.py``: the record,
MQTT and the PLC servers for one run). A recipe is selected through one port, ``plc.RecipePort``: register 11 (or OPC
UA's SelectRecipe) → ``PlcState.write_recipe`` → the port's ``select`` → the station's recipe set, which judges the
next part with that recipe's model. The record, MQTT and evidence stay sinks (``runtime/loop/sinks/``)."""
