import json, math, sys
d = sys.argv[1]
def load(step):
    return {r["index"]: r["correct"] for r in map(json.loads, open(f"{d}/heldout/step_{step:06d}.jsonl"))}
a, b = load(0), load(int(sys.argv[2]))
n = len(a); assert set(a) == set(b)
only_a = sum(a[i] and not b[i] for i in a); only_b = sum(b[i] and not a[i] for i in a)
m = only_a + only_b; k = min(only_a, only_b)
p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
print(f"n {n}: step0 {sum(a.values())}, step {sys.argv[2]} {sum(b.values())}; right only at step 0: {only_a}, only later: {only_b}; exact McNemar p = {p:.4f}")
