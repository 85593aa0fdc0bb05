"""Student files hold only what distillation changed, and refuse the wrong base."""

import pytest
import torch

from tests.tiny import tiny_bert, tiny_opt
from tests.vq import tiny_vq
from vqedit.engine import student as students
from vqedit.engine.checkpoint import from_hf


@pytest.mark.parametrize("groups", [1, 2])
def test_a_student_round_trips_through_its_file_in_fp16(tmp_path, groups):
    base = from_hf(tiny_bert(), codebook_size=16)
    trained = tiny_vq("bert", codebook_groups=groups)
    with torch.no_grad():
        trained.blocks[1].mlp.up.weight.add_(0.5)
    path = tmp_path / "student.safetensors"
    students.save(trained, base, path, {"note": "test"})
    applied = students.apply(base, path)
    ids = torch.randint(3, 1000, (1, 20))
    with torch.no_grad():
        expected, got = trained(ids), applied(ids)
    assert (got.hidden - expected.hidden).abs().max() < 1e-2, "fp16 rounding only"
    stored = set(safe_keys(path))
    assert "blocks.1.mlp.up.weight" in stored and "blocks.0.mlp.up.weight" not in stored
    assert {f"blocks.{i}.codebook.codewords" for i in range(2)} <= stored
    assert students.metadata(path)["note"] == "test"


def test_a_student_refuses_another_base_and_other_files(tmp_path):
    path = tmp_path / "student.safetensors"
    students.save(tiny_vq("bert"), from_hf(tiny_bert(), codebook_size=16), path, {})
    with pytest.raises(students.StudentError, match="different base model"):
        students.apply(from_hf(tiny_opt()), path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(students.StudentError, match="not a vqedit student"):
        students.apply(from_hf(tiny_bert()), junk)


def safe_keys(path):
    import safetensors

    with safetensors.safe_open(str(path), framework="pt") as f:
        return list(f.keys())
