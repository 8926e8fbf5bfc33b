"""Energy-guided image synthesis: colour-steered generation with exact targets.

Procedural shapes (exact hues) and Twemoji colour emoji (the ``[images]`` extra), the hue
energy, the exact guided target of a finite image set, a convolutional U-Net field, the
methods (`METHODS`: EFM, ED and the CFG and CEP baselines) trained through `ewfm.fit` and
sampled with an `ewfm.Sampler`, run directories (`train`, `load_run`, `generate`), metrics
and beta sweeps. Import explicitly: ``import ewfm.images``.
"""

from .._experiment import ConfigError as ConfigError, MissingExtraError as MissingExtraError
from ._config import (
    BETA_DRAWS as BETA_DRAWS,
    BETA_NETS as BETA_NETS,
    BETA_PHIS as BETA_PHIS,
    DATASETS as DATASETS,
    ED_PARAMS as ED_PARAMS,
    GUIDANCE as GUIDANCE,
    METHODS as METHODS,
    PRESETS as PRESETS,
    ImageConfig as ImageConfig,
    check_guidance as check_guidance,
    resolve_config as resolve_config,
)
from ._data import (
    ImageSet as ImageSet,
    TrainingSet as TrainingSet,
    cache_dir as cache_dir,
    check_dataset as check_dataset,
    hsv_to_rgb as hsv_to_rgb,
    image_classes as image_classes,
    load_dataset as load_dataset,
    load_twemoji as load_twemoji,
    make_shapes as make_shapes,
    resolve_energy as resolve_energy,
    training_set as training_set,
    twemoji_dir as twemoji_dir,
)
from ._energy import (
    ACHROMATIC as ACHROMATIC,
    check_images as check_images,
    check_target_hue as check_target_hue,
    circular_distance as circular_distance,
    evaluate_energy as evaluate_energy,
    hue_energy as hue_energy,
    mean_hue as mean_hue,
    pixel_hue_chroma as pixel_hue_chroma,
)
from ._methods import (
    CEPNets as CEPNets,
    Method as Method,
    init_net as init_net,
    loss_function as loss_function,
    net_structure as net_structure,
    sampler as sampler,
)
from ._metrics import (
    energy_summary as energy_summary,
    mmd as mmd,
    mmd_with_floor as mmd_with_floor,
    nearest_neighbour as nearest_neighbour,
)
from ._plot import save_grid as save_grid, sweep_figure as sweep_figure, tile as tile
from ._run import (
    Run as Run,
    generate as generate,
    guided_field as guided_field,
    load_run as load_run,
    time_generation as time_generation,
    train as train,
)
from ._sweep import (
    CFG_SCALES as CFG_SCALES,
    default_betas as default_betas,
    match_scale as match_scale,
    sweep as sweep,
    sweep_markdown as sweep_markdown,
    write_sweep as write_sweep,
)
from ._target import (
    ExactTarget as ExactTarget,
    exact_target as exact_target,
    histogram as histogram,
    hue_class as hue_class,
    hue_target_closed_form as hue_target_closed_form,
    n_classes as n_classes,
    target_weights as target_weights,
    tv_distance as tv_distance,
)
from ._unet import (
    PHI_KNOTS as PHI_KNOTS,
    EpsFromV as EpsFromV,
    UNetField as UNetField,
    energy_phi as energy_phi,
)
