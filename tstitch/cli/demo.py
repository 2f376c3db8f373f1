"""`tstitch-demo`: a web page (Gradio) that samples one image with a stitched member pair and one with the pair's
large member alone on the same seed, side by side, each with its time and NFE per member. The work is
``tstitch.jobs.demo``; this is its Hydra glue and the page. Gradio is imported only when the page is built (the
``demo`` extra), with its analytics off and no share link, so the page runs offline."""
import importlib.util
import logging
import os
import socket

import hydra

from tstitch.cli import CONF, entry_point, guard
from tstitch.errors import ConfigError

log = logging.getLogger(__name__)

CSS = "#stitched img, #large img {image-rendering: pixelated}"  # small images (the toy zoo's 28x28) stay sharp


@hydra.main(version_base=None, config_path=CONF, config_name="demo")
@guard
def main(cfg):
    import torch

    from tstitch.cli import schema
    from tstitch.jobs.demo import Demo, pairs

    schema.check(cfg, "demo")  # also in the preflight
    check_gradio()
    torch.set_num_threads(cfg.threads)
    demo = Demo(pairs(cfg.pairs), guidance=cfg.guidance_scale, device=cfg.device)
    serve(page(demo, cfg), cfg.server)


def check_gradio():
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("gradio is not installed; install the demo extra: pip install -e '.[demo]'")


def page(demo, cfg):
    """The Gradio Blocks of ``demo`` (a ``tstitch.jobs.demo.Demo``), its controls set to ``cfg``'s values."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
    import gradio as gr

    from tstitch.jobs.demo import caption

    first = next(iter(demo.pairs.values()))

    def conditions(label):
        """The class dropdown (class-conditional pairs) or the prompt boxes (text-to-image pairs) of a pair."""
        pair = demo.pair(label)
        classes = pair.classes or []
        return (gr.Dropdown(choices=[(n, i) for i, n in enumerate(classes)], value=0 if classes else None,
                            visible=bool(classes)),
                gr.Textbox(visible=not classes), gr.Textbox(visible=not classes))

    def generate(label, label_index, prompt, negative, fraction, steps, seed):
        pair = demo.pair(label)
        condition = prompt if pair.classes is None else label_index
        try:
            stitched, large = demo.run(label, condition, fraction, steps, seed, negative)
        except ConfigError as e:
            raise gr.Error(str(e)) from None
        return (stitched.image, large.image, "stitched: " + caption(stitched, pair.names),
                f"{pair.names[1]} alone: " + caption(large, pair.names, alone=True))

    with gr.Blocks(title="tstitch demo", analytics_enabled=False) as blocks:
        gr.Markdown("## T-Stitch: the small member for the first steps, the large one for the rest\n"
                    "The stitched image and the large member's alone, on the same seed's noise, solver and steps. "
                    "Times are one wall-clock reading each (sampling and decoding), not a benchmark: "
                    "`tstitch-generate` measures speedups in interleaved rounds.")
        with gr.Row():
            with gr.Column(scale=1):
                pair = gr.Dropdown(choices=list(demo.pairs), value=first.label, label="member pair (small + large)",
                                   elem_id="pair")
                classes = first.classes or []
                label_index = gr.Dropdown(choices=[(n, i) for i, n in enumerate(classes)],
                                          value=0 if classes else None, label="class", visible=bool(classes),
                                          elem_id="class")
                prompt = gr.Textbox(value=cfg.prompt, label="prompt", visible=not classes, elem_id="prompt")
                negative = gr.Textbox(value=cfg.negative_prompt or "", label="negative prompt",
                                      visible=not classes, elem_id="negative")
                fraction = gr.Slider(0, 1, value=cfg.fraction, step=0.05, label="fraction of the steps on the small "
                                     "member", elem_id="fraction")
                steps = gr.Slider(1, 250, value=cfg.steps, step=1, label="steps", elem_id="steps")
                seed = gr.Number(value=cfg.seed, precision=0, minimum=0, maximum=2 ** 53 - 1, label="seed",
                                 elem_id="seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                with gr.Row():
                    stitched = gr.Image(label="stitched", type="pil", format="png", interactive=False, height=320,
                                        elem_id="stitched")
                    large = gr.Image(label="large member alone", type="pil", format="png", interactive=False,
                                     height=320, elem_id="large")
                with gr.Row():
                    stitched_info = gr.Markdown(elem_id="stitched-info")
                    large_info = gr.Markdown(elem_id="large-info")
        pair.change(conditions, pair, [label_index, prompt, negative])
        button.click(generate, [pair, label_index, prompt, negative, fraction, steps, seed],
                     [stitched, large, stitched_info, large_info])
    return blocks


def serve(blocks, server):
    """Serve the page until Ctrl-C (a port in use is one line)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's requests to its own server, one line each
    log.info("tstitch-demo: serving the page (Gradio prints its address); Ctrl-C stops it")
    try:
        blocks.launch(server_name=server.host, server_port=server.port or None, share=False, css=CSS,
                      footer_links=[])
    except OSError as e:
        raise ConfigError(f"cannot serve on {server.host}:{server.port} ({e}); give another server.port=...") from None


def check_server(cfg, argv):
    """Before Hydra runs: gradio is installed, the pairs are known (no model loads) and the port is free."""
    from tstitch.jobs.demo import pairs

    check_gradio()
    pairs(cfg.pairs)
    if cfg.server.port:
        with socket.socket() as s:
            try:
                s.bind((cfg.server.host, cfg.server.port))
            except OSError as e:
                raise ConfigError(f"server.port={cfg.server.port} on {cfg.server.host}: {e.strerror}; give another "
                                  "port, or server.port=0 for the first free one from 7860") from None


entry = entry_point(main, "demo", after=check_server)

if __name__ == "__main__":
    entry()
