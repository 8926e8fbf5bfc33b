"""ewfm: energy-weighted flow matching and diffusion, and QIPO for offline RL, in JAX.

Implements "Energy-Weighted Flow Matching for Offline Reinforcement Learning" (Zhang, Zhang,
Gu; ICLR 2025). Docstrings cite the paper's equation numbers; docs/method.md states every
equation and names the function that computes it.

Set the environment variable ``EWFM_TYPECHECK=1`` before importing to check every
jaxtyping annotation at run time with beartype (shape mistakes then fail with the
dimension named). The test suite does this.
"""

import os as _os

if _os.environ.get("EWFM_TYPECHECK", "") not in ("", "0"):
    from jaxtyping import install_import_hook as _hook

    _hook("ewfm", "beartype.beartype")

from ._likelihood import log_likelihood as log_likelihood
from ._losses import (
    apply_field as apply_field,
    cep_loss as cep_loss,
    cfm_loss as cfm_loss,
    denoising_loss as denoising_loss,
    ed_loss as ed_loss,
    efm_loss as efm_loss,
    qd_loss as qd_loss,
    qfm_loss as qfm_loss,
)
from ._nets import (
    EnergyNet as EnergyNet,
    FourierTimeEmbedding as FourierTimeEmbedding,
    MLPField as MLPField,
    ResidualMLPField as ResidualMLPField,
    TwinQ as TwinQ,
)
from ._paths import (
    AbstractPath as AbstractPath,
    OTPath as OTPath,
    PathSample as PathSample,
    VPPath as VPPath,
)
from ._sample import (
    CFGField as CFGField,
    EnergyGuidedField as EnergyGuidedField,
    Sampler as Sampler,
    SampleResult as SampleResult,
    integrate as integrate,
    sample as sample,
    to_eps as to_eps,
    to_velocity as to_velocity,
)
from ._train import (
    FitResult as FitResult,
    TrainState as TrainState,
    fit as fit,
    init_state as init_state,
    load_checkpoint as load_checkpoint,
    make_epoch as make_epoch,
    save_checkpoint as save_checkpoint,
)
from ._weights import (
    check_beta as check_beta,
    energy_weights as energy_weights,
    grouped_energy_weights as grouped_energy_weights,
)

__version__ = "0.1.0"
