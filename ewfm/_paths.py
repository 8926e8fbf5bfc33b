"""Gaussian probability paths ``x_t = alpha_t x0 + sigma_t eps`` (docs/method.md, section 1).

``t = 0`` is data and ``t = 1`` is noise. A path turns a clean sample, noise and a time into
a noisy sample and its regression targets, and converts between the three parametrisations
of one field: velocity ``v``, score ``s = grad log p_t`` and noise prediction ``eps``
(Lemma 3.2; derived in docs/method.md, section 2).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

Time = Float[ArrayLike, ""]
Times = Float[ArrayLike, "*t"]


class PathSample(eqx.Module):
    """A noisy sample and its regression targets, as returned by `AbstractPath.sample`.

    Attributes:
        x_t: the noisy sample ``alpha_t x0 + sigma_t eps``.
        velocity: the conditional velocity ``u_t(x_t | x0) = alpha_t' x0 + sigma_t' eps``
            (the flow-matching target).
        eps: the noise (the denoising target); the conditional score is ``-eps / sigma_t``.
    """

    x_t: Float[Array, "*shape"]
    velocity: Float[Array, "*shape"]
    eps: Float[Array, "*shape"]


class AbstractPath(eqx.Module):
    """A Gaussian conditional probability path ``q_t(x_t | x0) = N(alpha_t x0, sigma_t^2 I)``.

    Subclasses give the schedule (`alpha`, `sigma`, their time derivatives, and the inverse of
    the half log-SNR used by DPM-Solver); everything else follows from it.
    """

    t_min: eqx.AbstractVar[float]

    @abc.abstractmethod
    def alpha(self, t: Times) -> Float[Array, "*t"]:
        """Signal scale ``alpha_t``."""

    @abc.abstractmethod
    def sigma(self, t: Times) -> Float[Array, "*t"]:
        """Noise scale ``sigma_t``."""

    @abc.abstractmethod
    def d_alpha(self, t: Times) -> Float[Array, "*t"]:
        """Time derivative ``alpha_t'``."""

    @abc.abstractmethod
    def d_sigma(self, t: Times) -> Float[Array, "*t"]:
        """Time derivative ``sigma_t'``."""

    @abc.abstractmethod
    def t_of_log_snr(self, lam: Float[ArrayLike, "*t"]) -> Float[Array, "*t"]:
        """Inverse of `log_snr`: the time whose ``log(alpha_t / sigma_t)`` is ``lam``."""

    def log_snr(self, t: Times) -> Float[Array, "*t"]:
        """Half log signal-to-noise ratio ``lambda_t = log(alpha_t / sigma_t)`` (DPM-Solver)."""
        return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))

    def sample(
        self, x0: Float[Array, "*shape"], eps: Float[Array, "*shape"], t: Time
    ) -> PathSample:
        """Noisy sample and targets at time ``t`` for clean ``x0`` and noise ``eps``."""
        x_t = self.alpha(t) * x0 + self.sigma(t) * eps
        velocity = self.d_alpha(t) * x0 + self.d_sigma(t) * eps
        return PathSample(x_t=x_t, velocity=velocity, eps=eps)

    # -- conversions between parametrisations (Lemma 3.2) -------------------------------

    def velocity_from_score(
        self, score: Float[Array, "*shape"], x: Float[Array, "*shape"], t: Time
    ) -> Float[Array, "*shape"]:
        """Lemma 3.2: ``v = (a'/a) x + sigma^2 (a'/a - sigma'/sigma) score``."""
        a, s, da, ds = self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)
        return (da / a) * x + (s * (da / a) * s - s * ds) * score

    def score_from_velocity(
        self, velocity: Float[Array, "*shape"], x: Float[Array, "*shape"], t: Time
    ) -> Float[Array, "*shape"]:
        """Inverse of `velocity_from_score`."""
        a, s, da, ds = self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)
        return (velocity - (da / a) * x) / (s * (da / a) * s - s * ds)

    def score_from_eps(self, eps: Float[Array, "*shape"], t: Time) -> Float[Array, "*shape"]:
        """``score = -eps / sigma_t`` (the conditional score of a Gaussian path)."""
        return -eps / self.sigma(t)

    def eps_from_score(self, score: Float[Array, "*shape"], t: Time) -> Float[Array, "*shape"]:
        """``eps = -sigma_t score``."""
        return -self.sigma(t) * score

    def velocity_from_eps(
        self, eps: Float[Array, "*shape"], x: Float[Array, "*shape"], t: Time
    ) -> Float[Array, "*shape"]:
        """``v = (a'/a) x + (sigma' - a' sigma / a) eps``; finite at ``sigma_t = 0``."""
        a, s, da, ds = self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)
        return (da / a) * x + (ds - da * s / a) * eps

    def eps_from_velocity(
        self, velocity: Float[Array, "*shape"], x: Float[Array, "*shape"], t: Time
    ) -> Float[Array, "*shape"]:
        """Inverse of `velocity_from_eps`."""
        a, s, da, ds = self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)
        return (velocity - (da / a) * x) / (ds - da * s / a)


class OTPath(AbstractPath):
    """Optimal-transport / rectified path: ``alpha_t = 1 - t``, ``sigma_t = s_min + (1 - s_min) t``.

    With ``sigma_min = 0`` (the default) the conditional velocity is ``eps - x0``.
    """

    sigma_min: float = 0.0
    t_min: float = 0.0

    def __check_init__(self):
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"OTPath: sigma_min must lie in [0, 1), got {self.sigma_min}.")

    def alpha(self, t: Times) -> Float[Array, "*t"]:
        return 1.0 - jnp.asarray(t)

    def sigma(self, t: Times) -> Float[Array, "*t"]:
        return self.sigma_min + (1.0 - self.sigma_min) * jnp.asarray(t)

    def d_alpha(self, t: Times) -> Float[Array, "*t"]:
        return -jnp.ones_like(jnp.asarray(t, dtype=float))

    def d_sigma(self, t: Times) -> Float[Array, "*t"]:
        return (1.0 - self.sigma_min) * jnp.ones_like(jnp.asarray(t, dtype=float))

    def t_of_log_snr(self, lam: Float[ArrayLike, "*t"]) -> Float[Array, "*t"]:
        # (1 - t) / (s_min + (1 - s_min) t) = e^lam
        #   =>  t = (1 - s_min e^lam) / (1 + (1 - s_min) e^lam)
        e = jnp.exp(jnp.asarray(lam))
        return (1.0 - self.sigma_min * e) / (1.0 + (1.0 - self.sigma_min) * e)


class VPPath(AbstractPath):
    """Variance-preserving path with QGPO's linear schedule ``beta(t) = b0 + t (b1 - b0)``.

    ``log alpha_t = -t^2 (b1 - b0) / 4 - t b0 / 2`` and ``sigma_t = sqrt(1 - alpha_t^2)``.
    ``t_min`` (default 1e-3) is where training times start and sampling stops, as in
    QGPO and DPM-Solver: the score is singular at ``t = 0``.
    """

    b0: float = 0.1
    b1: float = 20.0
    t_min: float = 1e-3

    def __check_init__(self):
        if not (0.0 <= self.b0 < self.b1):
            raise ValueError(f"VPPath: need 0 <= b0 < b1, got b0={self.b0}, b1={self.b1}.")

    def _log_alpha(self, t: Times) -> Float[Array, "*t"]:
        t = jnp.asarray(t)
        return -(t**2) * (self.b1 - self.b0) / 4.0 - t * self.b0 / 2.0

    def alpha(self, t: Times) -> Float[Array, "*t"]:
        return jnp.exp(self._log_alpha(t))

    def sigma(self, t: Times) -> Float[Array, "*t"]:
        # sqrt(1 - exp(2 log alpha)), accurate for small t
        return jnp.sqrt(-jnp.expm1(2.0 * self._log_alpha(t)))

    def d_alpha(self, t: Times) -> Float[Array, "*t"]:
        t = jnp.asarray(t)
        return -0.5 * (self.b0 + t * (self.b1 - self.b0)) * self.alpha(t)

    def d_sigma(self, t: Times) -> Float[Array, "*t"]:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def log_snr(self, t: Times) -> Float[Array, "*t"]:
        la = self._log_alpha(t)
        return la - 0.5 * jnp.log(-jnp.expm1(2.0 * la))

    def t_of_log_snr(self, lam: Float[ArrayLike, "*t"]) -> Float[Array, "*t"]:
        # log alpha = -softplus(-2 lam) / 2; solve the quadratic in t.
        sp = jax.nn.softplus(-2.0 * jnp.asarray(lam))
        db = self.b1 - self.b0
        return (-self.b0 + jnp.sqrt(self.b0**2 + 2.0 * db * sp)) / db
