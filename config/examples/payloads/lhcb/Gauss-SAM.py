# Gaudi options of the gridprobe Gauss test job (lhcb.toml): ten simulated events, written to
# Gauss-SAM.sim in the job's directory. Run as `lb-run Gauss/<version> gaudirun.py Gauss-SAM.py`.
from Configurables import LHCbApp, OutputStream

LHCbApp().EvtMax = 10
OutputStream("GaussTape").Output = "DATAFILE='PFN:Gauss-SAM.sim' TYP='POOL_ROOTTREE' OPT='RECREATE'"
