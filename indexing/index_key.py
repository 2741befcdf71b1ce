"""Which FAISS index to build, chosen under a memory budget (autofaiss's idea, the FAISS guidelines).

Pure Python (no FAISS): the nightly DAG and the config check import it at parse time.

The key is an ``index_factory`` string. ``auto`` takes the first candidate, in
order of accuracy, whose estimated memory fits ``max_index_memory``::

    Flat                                  exact; only up to flat_max vectors (too slow beyond)
    IVF{L}_HNSW{M},Flat                   full vectors in L lists, HNSW coarse quantizer
    IVF{L}_HNSW{M},SQ8                    8-bit scalar codes: d bytes per vector
    OPQ{m},IVF{L}_HNSW{M},PQ{m}           m-byte product codes after an OPQ rotation, m = 64, 32, 16, 8
                                          (m <= d / 2 dividing d: at least 2 dimensions per sub-quantizer)

with L = ``nlist`` or 4 sqrt(n) (at most n / 39, FAISS's minimum of training
points per list). Estimated bytes (the index in RAM, what a service holds)::

    Flat         n * 4d
    HNSW{M},Flat n * (4d + 8.8 M + 16)                  (2M level-0 links, ~10% upper levels)
    IVF          n * (code + 8 + 8)                     (code, id in its list, direct-map entry)
                 + L * 4d (+ L * (8.8 M + 16) with the HNSW quantizer)
                 + 4 d d_out (OPQ matrix) + 256 * 4 d_out (PQ codebooks) + 8 d (SQ ranges)
    code         Flat 4d, SQ8 d, SQfp16 2d, PQ{m}x{b} ceil(m b / 8)

Shorthands: ``flat``, ``ivf``, ``sq8``, ``pq`` (the largest m that fits) and
``hnsw`` expand to the keys above. Any other factory string is built as given
(its estimate is None when this grammar does not cover it; the written file's
size is recorded either way).
"""

from __future__ import annotations

import dataclasses
import math
import re

from notellm.config import ConfigError

SHORTHANDS = ("flat", "ivf", "sq8", "pq", "hnsw")
PQ_BYTES = (64, 32, 16, 8)

_IVF = re.compile(r"^(?:OPQ(?P<opq>\d+)(?:_(?P<dout>\d+))?,)?IVF(?P<nlist>\d+)(?:_HNSW(?P<qm>\d+))?,"
                  r"(?P<codec>Flat|SQ8|SQfp16|PQ(?P<pqm>\d+)(?:x(?P<pqb>\d+))?)$")
_HNSW = re.compile(r"^HNSW(?P<m>\d+)(?:,Flat)?$")


@dataclasses.dataclass(frozen=True)
class IndexChoice:
    key: str                      # the index_factory string
    family: str                   # flat | ivf | hnsw | other: how search parameters and mmap apply
    nlist: int | None
    estimate_bytes: int | None
    budget_bytes: int
    considered: tuple             # (key, estimate) of the candidates looked at, in order

    def as_dict(self) -> dict:
        return {"key": self.key, "family": self.family, "nlist": self.nlist, "estimate_bytes": self.estimate_bytes,
                "budget_bytes": self.budget_bytes, "considered": [list(c) for c in self.considered]}


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key):
        raise ConfigError(f"index_key {key!r} must be 'auto', one of {SHORTHANDS} or a FAISS index_factory string")


def default_nlist(n: int) -> int:
    """nlist ~ 4 * sqrt(n), at least 1 and at most n / 39 (FAISS wants >= 39 training points per list)."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39 or 1)))


def family_of(key: str) -> str:
    if key == "Flat":
        return "flat"
    if _HNSW.match(key):
        return "hnsw"
    return "ivf" if "IVF" in key else "other"


def estimate_bytes(key: str, n: int, d: int) -> int | None:
    """RAM of index ``key`` holding n vectors of dimension d (module docstring), None if not covered."""
    if key == "Flat":
        return n * 4 * d
    m = _HNSW.match(key)
    if m:
        return int(n * (4 * d + 8.8 * int(m["m"]) + 16))
    m = _IVF.match(key)
    if not m:
        return None
    nlist = int(m["nlist"])
    d_out = int(m["dout"] or d)
    codec = m["codec"]
    if codec == "Flat":
        code, extra = 4 * d_out, 0
    elif codec == "SQ8":
        code, extra = d_out, 8 * d_out
    elif codec == "SQfp16":
        code, extra = 2 * d_out, 0
    else:
        pqm, bits = int(m["pqm"]), int(m["pqb"] or 8)
        code, extra = math.ceil(pqm * bits / 8), (1 << bits) * 4 * d_out
    quantizer = nlist * 4 * d_out + (int(nlist * (8.8 * int(m["qm"]) + 16)) if m["qm"] else 0)
    opq = 4 * d * d_out if m["opq"] else 0
    return n * (code + 16) + quantizer + opq + extra


def _ivf_keys(d: int, nlist: int, hnsw_m: int) -> list[str]:
    ivf = f"IVF{nlist}_HNSW{hnsw_m}"
    return [f"{ivf},Flat", f"{ivf},SQ8"] + [f"OPQ{m},{ivf},PQ{m}" for m in PQ_BYTES if 2 * m <= d and d % m == 0]


def choose_key(n: int, d: int, config) -> IndexChoice:
    """The key to build for n vectors of dimension d under ``config`` (an IndexConfig)."""
    if n <= 0:
        raise ConfigError("cannot choose an index for zero vectors")
    budget = config.memory_budget
    nlist = config.nlist or default_nlist(n)
    wanted = config.index_key
    if wanted == "auto":
        keys = (["Flat"] if n <= config.flat_max else []) + _ivf_keys(d, nlist, config.hnsw_m)
    elif wanted == "flat":
        keys = ["Flat"]
    elif wanted == "hnsw":
        keys = [f"HNSW{config.hnsw_m},Flat"]
    elif wanted == "ivf":
        keys = _ivf_keys(d, nlist, config.hnsw_m)[:1]
    elif wanted == "sq8":
        keys = _ivf_keys(d, nlist, config.hnsw_m)[1:2]
    elif wanted == "pq":
        keys = _ivf_keys(d, nlist, config.hnsw_m)[2:]
    else:
        keys = [wanted]
    considered = []
    for key in keys:
        est = estimate_bytes(key, n, d)
        considered.append((key, est))
        if est is None or est <= budget:
            m = _IVF.match(key)
            return IndexChoice(key, family_of(key), int(m["nlist"]) if m else None, est, budget, tuple(considered))
    smallest = min(considered, key=lambda c: c[1])
    raise ConfigError(f"no index for {n} vectors of dimension {d} fits max_index_memory={config.max_index_memory} "
                      f"({budget} bytes): the smallest candidate of {wanted!r} is {smallest[0]} at "
                      f"{smallest[1]} bytes; raise the budget or choose another key")


def search_candidates(family: str, nlist: int | None, k: int, quantizer_hnsw: bool) -> list[str]:
    """ParameterSpace strings to try, cheapest first: nprobe doubling up to nlist (with the HNSW
    quantizer's efSearch at least 2 * nprobe), or HNSW efSearch doubling from max(16, k)."""
    if family == "ivf" and nlist:
        out = []
        for i in range(int(math.log2(max(nlist, 1))) + 2):
            nprobe = min(nlist, 2 ** i)
            s = f"nprobe={nprobe}" + (f",quantizer_efSearch={max(64, 2 * nprobe)}" if quantizer_hnsw else "")
            if s not in out:
                out.append(s)
        return out
    if family == "hnsw":
        return [f"efSearch={v}" for v in sorted({max(k, v) for v in (16, 32, 64, 128, 256, 512, 1024)})]
    return [""]
