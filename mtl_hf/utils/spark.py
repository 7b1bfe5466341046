"""A Spark session for the commands that run on Spark (`mtl-hf prepare`, `mtl-hf predict --master`)."""

from __future__ import annotations

import os
import sys

from ..errors import MissingExtraError

INSTALL_HINT = "pip install 'mtl_hf[spark]' (Spark also needs Java 17 or newer)"


def spark_session(master: str, app_name: str = "mtl-hf prepare"):
    """A SparkSession on `master` whose Python workers run this interpreter (they need pyarrow and PIL)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise MissingExtraError(f"{app_name} runs on Spark, which is not installed: {INSTALL_HINT}") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return (
        builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )


__all__ = ["INSTALL_HINT", "spark_session"]
