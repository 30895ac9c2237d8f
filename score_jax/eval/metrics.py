"""FID, Inception Score and KID as pure functions of features, in float64 on the host.

Each follows the convention the papers' numbers come from (tests/fixtures/fid/README.md):
- `frechet_distance`: pytorch-fid's formula, by default with tr sqrt(S1 S2) from the
  eigenvalues of the symmetric sqrt(S1) S2 sqrt(S1) (pytorch-fid's scipy sqrtm agrees to
  1e-7 relative on the fixtures' singular 2048-d covariances and takes 21 s to this one's
  2.7 s on 2 cores; `method='pytorch_fid'` runs pytorch-fid's own steps);
- `inception_score`: the improved-GAN convention DDPM reported (splits taken in order, no
  shuffling; p over all logits);
- `kernel_inception_distance`: the unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3 over
  random subsets, drawn as torch-fidelity draws them.
"""

from typing import Optional, Tuple

import numpy as np


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
  """(mu [d], sigma [d, d]) in float64 of features [N, d] (sigma with ddof 1, as np.cov)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"features must be [N >= 2, d]; got shape {f.shape}.")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh") -> float:
  """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), in float64.

  method 'eigh' (default): S1 S2 is similar to the symmetric PSD matrix R S2 R with
  R = sqrt(S1), so tr sqrt(S1 S2) is the sum of the square roots of R S2 R's eigenvalues: two
  symmetric eigendecompositions instead of a general (Schur) matrix square root, and no
  complex round-off to discard. Raises ValueError when a sigma is not a covariance
  (asymmetric, or an eigenvalue below -1e-6 of its largest).
  method 'pytorch_fid': pytorch-fid's own steps, bit for bit: scipy's sqrtm of S1 S2; on
  non-finite values, again with 1e-6 added to both diagonals; the real part, refusing an
  imaginary diagonal above 1e-3. The two agree to 1e-7 relative on the fixtures (singular
  2048-d covariances); only a product whose sqrtm is non-finite (then pytorch-fid adds the
  1e-6) separates them.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f"statistics of different dimensions: mu {mu1.shape} vs {mu2.shape}, "
                     f"sigma {s1.shape} vs {s2.shape}.")
  if method == "eigh":
    tr_covmean = _trace_sqrt_product(s1, s2)
  elif method == "pytorch_fid":
    tr_covmean = _trace_sqrtm_pytorch_fid(s1, s2)
  else:
    raise ValueError(f"method={method!r}; expected 'eigh' or 'pytorch_fid'.")
  diff = mu1 - mu2
  return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def _trace_sqrt_product(s1, s2) -> float:
  for name, s in (("sigma1", s1), ("sigma2", s2)):
    if not np.allclose(s, s.T, rtol=1e-6, atol=1e-12 * max(np.abs(s).max(), 1e-300)):
      raise ValueError(f"{name} is not symmetric; expected a covariance matrix.")
  w, u = np.linalg.eigh(s1)
  _check_psd("sigma1", "its eigenvalue", w)
  root1 = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  _check_psd("sigma2", "sqrt(sigma1) sigma2 sqrt(sigma1) has eigenvalue", inner)
  return float(np.sqrt(np.clip(inner, 0, None)).sum())


def _trace_sqrtm_pytorch_fid(s1, s2, eps: float = 1e-6) -> float:
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  covmean = linalg.sqrtm(s1.dot(s2))
  if not np.isfinite(covmean).all():
    offset = np.eye(s1.shape[0]) * eps
    covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"the matrix square root has an imaginary component {imag:.3g} on its "
                       "diagonal (above 1e-3); the statistics are not valid covariances.")
    covmean = covmean.real
  return float(np.trace(covmean))


def _check_psd(name, what, eigenvalues):
  # Round-off leaves the zero eigenvalues of a rank-deficient covariance near +-1e-16 of the
  # largest; a real negative direction is many orders above that.
  top = max(float(np.abs(eigenvalues).max()), 1e-300)
  if eigenvalues.min() < -1e-6 * top:
    raise ValueError(f"{name} is not a covariance matrix (positive semi-definite): {what} "
                     f"{eigenvalues.min():.3g}, the largest {top:.3g}.")


def inception_score(logits, splits: int = 10) -> Tuple[float, float]:
  """(mean, std) over `splits` of exp(E_x KL(p(y|x) || p(y))), split i being rows
  [i N // splits, (i + 1) N // splits) in order; p = softmax over all logits, float64."""
  x = np.asarray(logits, np.float64)
  if x.ndim != 2 or not 1 <= splits <= len(x):
    raise ValueError(f"logits of shape {x.shape} cannot be cut into splits={splits}.")
  x = x - x.max(axis=1, keepdims=True)
  logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
  p = np.exp(logp)
  n = len(x)
  scores = []
  for i in range(splits):
    part_p, part_logp = p[i * n // splits:(i + 1) * n // splits], logp[i * n // splits:(i + 1) * n // splits]
    log_py = np.log(part_p.mean(axis=0))
    kl = (part_p * (part_logp - log_py)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def kid_subsets(n1: int, n2: int, num_subsets: int, subset_size: int, seed: int = 2020):
  """(idx1, idx2) [num_subsets, m] as torch-fidelity draws them: RandomState(seed), per subset
  choice(n1, m) then choice(n2, m), without replacement."""
  if not 2 <= subset_size <= min(n1, n2):
    raise ValueError(f"subset_size={subset_size} must lie in [2, min(n1, n2) = {min(n1, n2)}].")
  rs = np.random.RandomState(seed)
  idx1, idx2 = [], []
  for _ in range(num_subsets):
    idx1.append(rs.choice(n1, subset_size, replace=False))
    idx2.append(rs.choice(n2, subset_size, replace=False))
  return np.stack(idx1), np.stack(idx2)


def kernel_inception_distance(f1, f2, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 2020,
                              subsets: Optional[Tuple[np.ndarray, np.ndarray]] = None
                              ) -> Tuple[float, float]:
  """(mean, std) over subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, float64.

  `subsets` gives the rows (idx1, idx2) explicitly; otherwise they are drawn by `kid_subsets`.
  """
  f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
  if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
    raise ValueError(f"feature sets of shapes {f1.shape} and {f2.shape}; expected [N, d] "
                     "with the same d.")
  idx1, idx2 = subsets if subsets is not None else kid_subsets(
      len(f1), len(f2), num_subsets, min(subset_size, len(f1), len(f2)), seed)
  d = f1.shape[1]
  mmds = []
  for a, b in zip(idx1, idx2):
    x, y = f1[a], f2[b]
    m = len(x)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1))
    mmds.append(mmd - 2 * kxy.sum() / m**2)
  return float(np.mean(mmds)), float(np.std(mmds))
