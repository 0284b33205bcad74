import numpy as np, sys, os, time, tempfile
sys.path.insert(0, "/work/main/benchmarks")
from speed_s2ac import interleaved_ms
from sb3_stein.envs.cartpole_swingup import CartPoleSwingUpOCP
from sb3_stein.common.mpc import MPCLayer
os.environ["SB3_STEIN_JIT_CACHE"] = tempfile.mkdtemp()
rng = np.random.default_rng(0)
S = rng.uniform([-1.5, -np.pi, -2.0, -4.0], [1.5, np.pi, 2.0, 4.0], size=(256, 4)); P = rng.uniform(-np.pi, np.pi, size=(256, 1))
c = {}
for f in ["-O1", "-O2", "-O3"]:
    l = MPCLayer(CartPoleSwingUpOCP(horizon=20), compiled=True, compile_flags=(f,), n_threads=1)
    print(f, "build", round(l.build_seconds, 1), flush=True)
    sol = l.solve(S, P)
    c[f + "_fwd"] = lambda l=l: l.solve(S, P)
    c[f + "_bwd"] = lambda l=l, s=sol: l.vjp(s, np.ones((256, 1)))
r = interleaved_ms(c, rounds=3)
print({k: round(v / 256, 3) for k, v in r.items()})
