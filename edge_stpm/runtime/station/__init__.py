"""The station: one file that says everything a run does (``config``), recipes the PLC selects (``recipes``), the good
parts' drift alarm per recipe (``drift``)."""
