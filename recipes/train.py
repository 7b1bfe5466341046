"""Train one ViT on several image tasks from a YAML recipe.

    accelerate launch recipes/train.py recipes/configs/demo.yaml
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/train.py CONFIG.yaml
    torchrun --nproc_per_node 4 recipes/train.py CONFIG.yaml --learning_rate 1e-4   # flags override the YAML

The stages (data -> tasks -> model -> trainer -> train -> evaluate -> save -> card -> push) live in
`mtl_hf/commands/train.py`, where `mtl-hf train` runs them too; `python recipes/train.py --help` lists every field.
"""

from mtl_hf.commands.train import main

if __name__ == "__main__":
    main()
