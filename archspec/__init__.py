"""archspec: declarative neural-network architectures, statically checked, compiled to PyTorch,
exported to ONNX. `import archspec` never imports torch or onnx."""

from .analyze import Report
from .api import build, check, export, load, load_text, load_weights, run, save_weights
from .errors import ArchspecError, Diagnostic, InternalError, SpecError
from .files import PathError
from .limits import Limits
from .weights import WeightsError

__version__ = "0.1.0"
__all__ = ["ArchspecError", "Diagnostic", "InternalError", "Limits", "PathError", "Report", "SpecError", "WeightsError",
           "__version__", "build", "check", "export", "load", "load_text", "load_weights", "run", "save_weights"]
