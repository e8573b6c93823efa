"""`pumpctl campaign`: verification campaigns over many virtual patients
(docs/campaign.md). Each patient is a generated scenario (its own seed, drug,
prescription changes, refills and at most one injected fault) run on a real
MicroPython emulator in virtual time through pumpctl.scenario's Runner; the
patients are spread over a Dask cluster (a LocalCluster by default, any
cluster by --scheduler) and aggregated per fault class.

    faults.py     the fault classes (data: what to inject, which alarms detect it)
    generate.py   a patient's scenario from the campaign seed
    patient.py    one patient on one emulator (runs on a Dask worker)
    aggregate.py  per-fault-class figures from the patient rows
    output.py     Parquet, the HTML report and its plots, the terminal table
    cluster.py    the Dask side: LocalCluster or --scheduler, progress, Ctrl-C
"""
