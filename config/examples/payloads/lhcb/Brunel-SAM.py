# Gaudi options of the gridprobe Brunel test job (lhcb.toml): reconstructs the ten events of the
# test input shipped with the release, written to Brunel-SAM.dst in the job's directory.
from Configurables import Brunel

Brunel().EvtMax = 10
Brunel().DatasetName = "Brunel-SAM"
Brunel().OutputType = "DST"
