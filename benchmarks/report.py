"""The training benchmark's report: the table printed before the JSON line, and the targets it checks."""
from __future__ import annotations


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def render(res: dict) -> str:
    m, thr, col = res["machine"], res.get("throughput"), res.get("colam")
    lines = [f"COLAM Workbench benchmark: {res['model']} on 3x32x32, {res['classes']} classes, batch "
             f"{res['batch_size']}, device {res['device']} ({m['cpu']}, {m['torch_threads']} threads), "
             f"torch {m['torch']}"]
    if thr:
        s = thr["settings"]
        lines += ["", f"Training throughput, steady state: {thr['rounds']} interleaved rounds of "
                      f"{thr['warmup_batches']} "
                      f"warm-up + {thr['batches_per_window']} timed batches (ours: channels_last={s['channels_last']}, "
                      f"amp={s['amp']}); img/s = median over clean windows (other processes < "
                      f"{thr['clean_foreign_cores']} cores)",
                  f"{'variant':<36}{'warm-up s':>10}{'img/s':>8}{'all med':>9}{'best':>7}{'clean':>7}{'x ref':>7}"
                  f"{'ceiling':>9}"]
        labels = {"reference": f"reference (PIL, {thr['reference_workers']} workers, NCHW)",
                  "ours_hl": f"ours HL (amp {s['amp']}, eager)",
                  "ours_colam_online": "ours COLAM online (accumulating)",
                  "ours_hl_fp32": "ours HL, float32 (amp off)", "ours_hl_compiled": "ours HL + torch.compile (cold)"}
        auto = thr.get("ours_hl_compile_auto")
        if auto:
            labels["ours_hl_compile_auto"] = f"ours HL, compile auto ({auto['epochs']} ep)"
        for k, label in labels.items():
            if k == "ours_hl_compile_auto":  # the variant auto picks, its row repeated under its own name
                v, ratio = (thr[auto["variant"]] if auto["measured"] else None), thr.get(k + "_vs_reference")
            else:
                v, ratio = thr.get(k), thr.get(k + "_vs_reference", 1.0)
            if v is not None:
                lines.append(f"{label:<36}{v['warmup_s']:>10.2f}{v['images_per_s']:>8.0f}"
                             f"{v['images_per_s_median']:>9.0f}{v['images_per_s_best']:>7.0f}"
                             f"{v['clean_windows']:>4}/{v['windows']:<2}{_fmt(ratio):>7}{v['ceiling_fraction']:>9.2f}")
            elif k == "ours_hl_compile_auto":
                lines.append(f"{label:<36}  picks {auto['variant']}, not measured here (--no-compile)")
        lines.append(f"amp: {s['amp']} ({s.get('amp_reason', '')})"
                     + (f"; ours HL / ours HL float32: {_fmt(thr['ours_hl_vs_ours_hl_fp32'], '.3f')}"
                        if "ours_hl_vs_ours_hl_fp32" in thr else ""))
        if auto:
            lines.append(f"compile auto for a {auto['epochs']}-epoch run of {auto['images'] // auto['epochs']:,} "
                         f"images ({auto['images']:,} training images): {auto['reason']}")
        lines.append(f"model {thr['model_flops_per_image'] / 1e6:.1f} MFLOP/image forward (x3 for training); matmul "
                     f"peak {thr['matmul_flops_fp32'] / 1e9:.0f} GFLOP/s fp32"
                     + (f", {thr['matmul_flops_amp'] / 1e9:.0f} GFLOP/s amp" if "matmul_flops_amp" in thr else "")
                     + f"; ceiling fraction of {thr['ceiling_variant']}: {thr['ceiling_fraction']:.2f}")
        lines.append(f"COLAM online / HL, same rounds: {thr['ours_colam_online_vs_ours_hl']:.3f}")
        if "ours_hl_compiled_vs_ours_hl" in thr:
            be, probe = thr.get("compile_break_even_images"), thr.get("compile_overhead")
            lines.append(f"torch.compile / eager: {_fmt(thr['ours_hl_compiled_vs_ours_hl'], '.3f')}; "
                         + (f"a whole run compiles for {probe['overhead_s']:.0f} s (every graph, cold); "
                            if probe else "first training graph only; ")
                         + (f"pays for it after {be:,.0f} training images" if be is not None
                            else "never pays for it"))
    if col:
        lines += ["", f"COLAM vs HL per epoch ({col['images']} images, 1-epoch stages, {col['epochs']} epochs "
                      f"interleaved, {col['window_epochs']} measured, {col['updates_in_window']} updates inside)",
                  f"  one eval-pass update costs {_fmt(col['update_cost_epochs'], '.3f')} epochs",
                  f"  eval-pass, every epoch:   HL/COLAM time ratio {_fmt(col['eval_direct_ratio'], '.3f')} measured, "
                  f"{_fmt(col['eval_predicted_ratio'], '.3f')} predicted by 1/(1 + updates*u/epochs); training "
                  f"alone {_fmt(col['eval_train_only_ratio'], '.3f')}",
                  f"  eval-pass, every {col['update_interval_epochs']} epochs: "
                  f"{_fmt(col['eval_ratio_at_interval'], '.4f')}"
                  " (derived)",
                  f"  online variant:           {_fmt(col['online_ratio'], '.3f')} (median epoch pair "
                  f"{_fmt(col['online_ratio_median_epoch'], '.3f')})"]
    if res.get("soft_labels"):
        rows = res["soft_labels"]
        n1, n2 = list(rows[0]["accumulate_seconds"])
        lines += ["", f"Soft-label state and update alone (no model; n1, n2 = {n1}, {n2} peer samples)",
                  f"{'C':>6}{'state bytes':>13}{'online acc.':>13}{'accum. n1 ms':>14}{'accum. n2 ms':>14}"
                  f"{'t2/t1':>7}{'ns/peer':>9}{'finish ms':>11}{'loss us hard/soft':>19}"]
        for row in rows:
            t = list(row["accumulate_seconds"].values())
            lines.append(f"{row['classes']:>6}{row['state_bytes']:>13}{row['online_accumulator_bytes']:>13}"
                         f"{t[0] * 1e3:>14.3f}{t[-1] * 1e3:>14.3f}{row['time_ratio']:>7.1f}{row['ns_per_peer']:>9.0f}"
                         f"{row['finish_seconds'] * 1e3:>11.3f}"
                         f"{row['loss_seconds_hard'] * 1e6:>11.0f}/{row['loss_seconds_soft'] * 1e6:<7.0f}")
    if res.get("memory"):
        mem = res["memory"]
        lines += ["", f"Peak resident memory, {mem['train_images']} training images, {mem['training_batches']} "
                      f"batches + one update pass over all of them ({mem['update_pass_seconds']:.1f} s): "
                      f"{mem['peak_rss_bytes'] / 2 ** 30:.2f} GiB (the imports alone: "
                      f"{mem['imports_rss_bytes'] / 2 ** 30:.2f} GiB)"]
        if mem.get("bytes_per_image") is not None:
            small = mem["probes"][0]
            lines.append(f"  with {small['train_images']} images: {small['peak_rss_bytes'] / 2 ** 30:.2f} GiB; growth "
                         f"{mem['bytes_per_image']:.0f} bytes per training image (3072 of them the uint8 image)")
    if res.get("targets"):
        lines += ["", "Targets"]
        for k, v in res["targets"].items():
            lines.append(f"  {k:<42} {_fmt(v['value'], '.3f'):>8}  target {v['op']} {v['target']}: "
                         f"{'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)


def check_targets(res: dict) -> dict:
    t = {}

    def add(name, value, op, target):
        if value is not None:
            t[name] = {"value": value, "op": op, "target": target,
                       "met": value >= target if op == ">=" else value <= target}
    thr, col = res.get("throughput"), res.get("colam")
    if thr:
        add("ours HL / reference (steady state)", thr["ours_hl_vs_reference"], ">=", 1.5)
        if "ours_hl_compiled_vs_reference" in thr:
            add("ours HL compiled / reference", thr["ours_hl_compiled_vs_reference"], ">=", 1.5)
        if thr.get("ours_hl_compile_auto_vs_reference") is not None:
            add("ours HL compile auto / reference", thr["ours_hl_compile_auto_vs_reference"], ">=", 1.5)
        add("ceiling fraction", thr["ceiling_fraction"], ">=", 0.6)
    if col:
        add(f"COLAM eval-pass / HL per epoch at {col['update_interval_epochs']}", col["eval_ratio_at_interval"],
            ">=", 0.98)
        add("COLAM online / HL per epoch (epochs)", col["online_ratio"], ">=", 0.99)
    if thr:
        add("COLAM online / HL (batch windows)", thr["ours_colam_online_vs_ours_hl"], ">=", 0.99)
    if res.get("memory"):
        add("peak RSS GiB (CIFAR-100 sized)", res["memory"]["peak_rss_bytes"] / 2 ** 30, "<=", 2.0)
    return t
