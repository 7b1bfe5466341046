"""Multi-task vs single-task, and balancing methods against each other, from one recipe YAML.

    accelerate launch recipes/compare.py recipes/configs/digits.yaml --methods equal,famo,upgrad --seeds 3
    python recipes/compare.py recipes/configs/demo.yaml --budget total --output_dir outputs/demo-compare

Per seed: one single-task model per task, one multi-task model per method; then delta_m, time and
memory in `comparison.md`, `comparison.json` and `comparison.png`. The logic lives in
`mtl_hf/commands/compare/`, where `mtl-hf compare` runs it too; finished runs are not trained again.
"""

from mtl_hf.commands.compare import main

if __name__ == "__main__":
    main()
