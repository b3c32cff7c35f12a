import json, sys
rows = [("hues_100_b2", "hues, 100 labels, labelled batch 2 (defaults)"),
        ("geometry_1000_b2", "scale/shape/orientation, 1,000, batch 2 (defaults)"),
        ("hues_1000_b16", "hues, 1,000, batch 16 (ZeroDIM's equal batch)"),
        ("hues_1000_b16_cls0.1", "... and w_classify 0.1"),
        ("hues_1000_b16_cls0.1_decay0.01", "... and w_decay 0.01"),
        ("hues_1000_b16_cls0.1_decay0.1", "... and w_decay 0.1")]
print("| run | DCI-D | DCI-I | MIG | classifier acc. (per factor) | residual probe on labelled (chance ~0.10) | edit target | edit kept |")
print("|---|---|---|---|---|---|---|---|")
for name, label in rows:
  try:
    d = json.load(open(f"docs/results/labels/{name}.json"))["results"]["labels"]
  except FileNotFoundError:
    continue
  c = d["classifier"]; names = [k for k in c if k != "mean"]
  probe = d["residual_probe"]["factors"]
  print(f"| {label} | {d['dci']['disentanglement']:.2f} | {d['dci']['informativeness_test']:.2f} | {d['mig']['discrete_mig']:.2f} | "
        f"{c['mean']:.2f} ({' / '.join('%.2f' % c[n] for n in names)}) | "
        f"{' / '.join('%.2f' % probe[n]['accuracy'] for n in names)} | {d['edit']['target']:.2f} | {d['edit']['kept']:.2f} |")
