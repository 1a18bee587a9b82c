"""Latency per face of shipped models (or .onnx paths) at batch 1 and 4, on every available
execution provider, median of many runs after warm-up; with the metrics in each card."""
from __future__ import annotations

from . import echo as _echo

METRIC_KEYS = ("nme_io", "auc@0.08", "fr@0.08", "rmse_px", "mean_px")


def bench(models=(), runs: int = 300, threads: int = 1, echo=_echo) -> None:
    """Writes the table through `echo`, one line per model file and provider."""
    import onnxruntime as ort

    from fkp_live.card import ModelCard, models_dir, resolve
    from fkp_live.track.landmarker import gpu_driver_present

    from .export import latency_ms

    names = list(models) or sorted(p.stem for p in models_dir().glob("*.onnx"))
    # GPU providers are listed whenever onnxruntime-gpu is installed; they run only with a driver
    gpu = ("TensorrtExecutionProvider", "CUDAExecutionProvider") if gpu_driver_present() else ()
    providers = [p for p in (*gpu, "CPUExecutionProvider") if p in ort.get_available_providers()]
    echo(f"onnxruntime {ort.__version__}; threads={threads}; median of {runs} runs after warm-up")
    echo(f"{'model':<22}{'provider':<12}{'MB':>6}{'b1 ms/face':>12}{'b4 ms/face':>12}{'b4 ms':>8}  metrics")
    for name in names:
        path, card_path = resolve(name)
        card = ModelCard.load(card_path)
        for prov in providers:
            try:
                b1 = latency_ms(path, 1, card.input_size, card.channels, prov, threads, runs)
                b4 = latency_ms(path, 4, card.input_size, card.channels, prov, threads, runs)
            except Exception as e:  # provider listed but unusable here (no GPU libraries)
                echo(f"{path.stem:<22}{prov[:-17]:<12}  unavailable: {str(e).splitlines()[0][:80]}")
                continue
            own = card.metrics.get("int8") if path.stem.endswith(".int8") else None
            m = own or card.metrics.get("fp32", card.metrics)
            ms = ", ".join(f"{k}={m[k]:.3g}" for k in METRIC_KEYS if isinstance(m.get(k), (int, float)))
            ms += f" ({card.metrics.get('split', '?')}{', fp32 model' if path.stem.endswith('.fp16') else ''})" if ms else ""
            echo(f"{path.stem:<22}{prov[:-17]:<12}{path.stat().st_size / 1e6:>6.2f}{b1:>12.3f}"
                 f"{b4 / 4:>12.3f}{b4:>8.2f}  {ms}")
