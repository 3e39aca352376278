"""Stage check_params: the gate every other stage depends on. DVC deletes a stage's outputs before running it, so
a bad param found by the stage itself has already cost its previous outputs; this stage reads the whole params
file first and fails `dvc repro` before any other stage starts. Its output is the same text for every valid
params file, so passing it re-runs nothing downstream that the params themselves would not."""
from rlinterp.config import load_params
from rlinterp.files import write_json
from rlinterp.runtime import stage_main, stage_paths

PASSED = {"params.yaml": "passed rlinterp.config's checks"}


@stage_main
def main() -> None:
    paths = stage_paths("output")
    load_params("params.yaml")
    write_json(paths.output, PASSED)


if __name__ == "__main__":
    main()
