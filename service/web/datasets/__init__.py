"""The newer GUI's samples kept by the service (CONTRACT-GUI2.md): /datasets/*, /calibrate_dataset."""
