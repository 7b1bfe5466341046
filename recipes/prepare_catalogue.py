"""A product catalogue (a table whose rows point to photos) -> Parquet shards for training, on Spark.

    python recipes/prepare_catalogue.py outputs/catalogue/catalogue.csv outputs/catalogue-shards \
        --image_column path --tasks category,colour,pattern,tags:multilabel,size --size 64 --master "local[2]"

Then train from the shards: `dataset: outputs/catalogue-shards` in a recipe YAML. The logic lives in
`mtl_hf/commands/prepare/`, where `mtl-hf prepare` runs it too; `--help` lists every option.
"""

from mtl_hf.commands.prepare import main

if __name__ == "__main__":
    main(prog="prepare_catalogue.py")
