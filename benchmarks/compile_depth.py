"""Compile time of a training step against depth: the DPO step of a Llama-3.1-8B-wide model (hidden 4096,
32 heads, 8 kv heads, MLP 14336) with 1, 2, 4, ... layers, compiled for a TPU slice's compile-only devices
(llm.training.aot; needs the tpu-compile extra), with the layers unrolled (a list of blocks: the program
grows with depth) and scanned (model.scan_layers: one layer under lax.scan), side by side.

  python benchmarks/compile_depth.py [--topology v5p:2x2x2 --depths 1,2,4,8,16,32 --length 1024]

Prints a Markdown row per depth and layout: lowering and compile seconds, and the compiled step's
temporaries per chip.
"""

import argparse
import itertools
import json
import tempfile
import time

from llm.parallel import topology
from llm.training import aot
from llm.training.config import load_config

LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 1,
            "eos_token_id": 2}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--topology", default="v5p:2x2x2")
  parser.add_argument("--depths", default="1,2,4,8,16,32")
  parser.add_argument("--layouts", default="unrolled,scanned")
  parser.add_argument("--length", type=int, default=1024, help="prompt and response tokens each")
  args = parser.parse_args()
  devices = topology.compile_only_devices(args.topology)
  print(f"{args.topology}: {len(devices)} x {devices[0].device_kind}; DPO, 8 pairs x {2 * args.length} tokens, "
        "fsdp over the slice, remat, bf16 compute")
  print("| layers | layers are | lower | compile | temporaries per chip |")
  print("| --- | --- | --- | --- | --- |")
  for depth, layout in itertools.product((int(d) for d in args.depths.split(",")), args.layouts.split(",")):
    folder = tempfile.mkdtemp()
    with open(f"{folder}/config.json", "w") as f:
      json.dump({**LLAMA_8B, "num_hidden_layers": depth}, f)
    config = load_config("dpo", None, [f"model.path={folder}", "model.compute_dtype=bfloat16", "model.remat=true",
                                       f"data.max_prompt_length={args.length}", f"data.max_response_length={args.length}",
                                       "train.batch_size=8", "train.mesh={fsdp: -1}",
                                       f"model.scan_layers={layout == 'scanned'}"])
    start = time.perf_counter()
    lowered, _ = aot.lower_train_step(config, "dpo", devices)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    temporaries = compiled.memory_analysis().temp_size_in_bytes / topology.GIB
    print(f"| {depth} | {layout} | {lowered_at - start:.1f} s | {done - lowered_at:.1f} s | {temporaries:.2f} GiB |", flush=True)


if __name__ == "__main__":
  main()
