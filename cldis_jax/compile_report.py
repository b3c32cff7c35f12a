"""What `--mode=compile` prints (`format_table`), and the launch preflight's
verdict (`require_fit`), from the results of `compile_check.run`."""

from cldis_jax import errors


def duration(seconds: float) -> str:
  """'12 s', '3.4 min', '5.6 h' or '7.8 days'."""
  for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
    if seconds >= size:
      return f"{seconds / size:.1f} {unit}"
  return f"{seconds:.0f} s"


def _number(x: float) -> str:
  return f"{x:.0f}" if x == int(x) else f"{x:.2f}"


def _gib(x) -> str:
  return "-" if x is None else f"{x / 2**30:.2f}"


def format_table(result: dict) -> str:
  """The printed summary of one topology's JSON."""
  chip = result["chip"]
  head = (f"{result['topology']}: {result['devices']} x {result['device_kind']} on "
          f"{result['processes']} host process(es)")
  if chip:
    head += (f"; {chip['hbm_bytes'] / 2**30:.1f} GiB HBM, {chip['peak_bf16_flops'] / 1e12:.0f} "
             f"TFLOP/s bf16, {chip['hbm_bytes_per_s'] / 1e9:.0f} GB/s per chip")
  lines = [head, "per device:  program   batch  args GiB  temp GiB  code GiB  total GiB  "
           "headroom  fits  GFLOP/call  bound ms  compile s"]
  for name, r in result["programs"].items():
    b = r.get("bytes", {})
    headroom = "-" if r.get("headroom") is None else f"{100 * r['headroom']:.0f}%"
    fits = {True: "yes", False: "NO", None: "-"}[r.get("fits")]
    bound = f"{1e3 * r['roofline_s']:.2f}" if r.get("roofline_s") else "-"
    gflop = f"{r['flops'] / 1e9:.1f}" if "flops" in r else "-"
    batch = _number(r["per_device_batch"])
    lines.append(f"  {name:>18}  {batch:>6}  {_gib(b.get('argument')):>8}  "
                 f"{_gib(b.get('temp')):>8}  {_gib(b.get('code')):>8}  {_gib(b.get('total')):>9}"
                 f"  {headroom:>8}  {fits:>4}  {gflop:>10}  {bound:>8}  {r['compile_s']:9.1f}")
    if "out_of_memory" in r:
      oom = r["out_of_memory"]
      lines.append(f"      does not fit: asks for {_gib(oom.get('required_bytes'))} GiB, "
                   f"{_gib(oom.get('excess_bytes'))} GiB more than the "
                   f"{_gib(oom.get('available_bytes'))} GiB the compiler can use")
  train = result["programs"].get("train", {})
  if train.get("days_at_bound"):
    lines.append(f"train: {train['flops_per_image'] / 1e9:.2f} GFLOP per image; "
                 f"{train['num_steps']} steps take at least "
                 f"{duration(86400 * train['days_at_bound'])} at the roofline bound (a bound, "
                 "not a measured speed)")
  if "max_batch" in result:
    m = result["max_batch"]
    lines.append(f"largest train batch with {100 * result['headroom']:.0f}% headroom: "
                 f"{m['per_device_batch']} per device, {m['global_batch']} in all")
  lines.append(f"written to {result['path']}")
  return "\n".join(lines)


def require_fit(config, results) -> None:
  """With `compile.require_fit` (the launch preflight): a UserError, one line
  saying what to change, where a topology's train step does not fit."""
  if not config.compile.require_fit:
    return
  for result in results:
    train = result["programs"].get("train")
    if train is None or train["fits"] is not False:
      continue
    need = train.get("bytes", {}).get("total") or train["out_of_memory"].get("required_bytes")
    raise errors.UserError(
        f"the train step does not fit {result['topology']}: it needs {_gib(need)} GiB per chip "
        f"of {_gib(train['hbm_bytes'])} GiB with {100 * result['headroom']:.0f}% to spare "
        f"(batch {_number(train['per_device_batch'])} per chip); lower train.batch_size or pick a "
        f"larger topology (--config.compile.find_max_batch=True finds the largest batch)")
