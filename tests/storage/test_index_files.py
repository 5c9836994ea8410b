"""An index.faiss read from disk is checked from its length and header before faiss reads it: faiss trusts
the file's length fields, so 45 bytes could make it allocate gigabytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.pipeline import patchcore

pytestmark = pytest.mark.skipif(not patchcore.FAISS_AVAILABLE, reason="faiss is not installed")

CLAIMING_GIGABYTES = """
import resource, struct, sys
import numpy as np
from service.pipeline.patchcore import MemoryIndex
memory = np.random.default_rng(0).random((50, 16), dtype=np.float32)
MemoryIndex.from_bytes(MemoryIndex.build(memory).to_bytes(), memory)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
crafted = b"IxF2" + struct.pack("<iqqq?iQ", 16, 50, 1 << 20, 1 << 20, True, 1, 1_500_000_000 // 4)
index = MemoryIndex.from_bytes(crafted, memory)
assert index.nearest_distances(memory[:3]).max() == 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_45_byte_index_claiming_gigabytes_is_rebuilt_without_allocating_them():
    run = subprocess.run([sys.executable, "-c", CLAIMING_GIGABYTES], capture_output=True, text=True, check=False,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) < 64 * 1024, f"reading it grew the peak by {run.stdout.strip()} KiB"


def test_the_header_check_accepts_faiss_own_files_and_names_what_is_wrong():
    memory = np.random.default_rng(1).random((7, 5), dtype=np.float32)
    data = patchcore.MemoryIndex.build(memory, "faiss").to_bytes()
    assert patchcore.flat_index_problem(data, 7, 5) is None
    assert "holds 185 bytes" in patchcore.flat_index_problem(data, 7, 4)
    assert "not a flat L2 index" in patchcore.flat_index_problem(b"IxFI" + data[4:], 7, 5)
    lying = data[:8] + (8).to_bytes(8, "little") + data[16:]  # says 8 rows, holds 7 rows' bytes
    assert "says 8 vectors of dim 5" in patchcore.flat_index_problem(lying, 7, 5)


VERIFYING_A_CLAIM_OF_GIGABYTES = """
import hashlib, json, resource, struct, sys
from pathlib import Path
import numpy as np
from service.pipeline.patchcore import MemoryIndex
from service.storage import ModelStore
store = ModelStore(Path(sys.argv[1]))
folder = store.model_dir("Master1", "roi", create=True)
memory = np.random.default_rng(0).random((50, 16), dtype=np.float32)
with store.locked(folder):
    files = store.write_version(folder, memory, (5, 10), {}, MemoryIndex.build(memory, "faiss").to_bytes())
assert store.verify_folder(folder) == [], store.verify_folder(folder)
crafted = b"IxF2" + struct.pack("<iqqq?iQ", 16, 50, 1 << 20, 1 << 20, True, 1, 1_500_000_000 // 4)
files.index_path.write_bytes(crafted)
manifest = files.folder / "version.json"
manifest.write_text(json.dumps({**files.manifest, "index_sha256": hashlib.sha256(crafted).hexdigest()}))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(store.verify_folder(folder)))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_verify_reads_an_index_claiming_gigabytes_from_its_header_without_allocating_them(tmp_path):
    """``bdi models verify`` checks every version's index.faiss: a 45-byte file there must not make it allocate
    the 1.5 GB the file claims, and its problem is named."""
    run = subprocess.run([sys.executable, "-c", VERIFYING_A_CLAIM_OF_GIGABYTES, str(tmp_path)], capture_output=True,
                         text=True, check=False, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    problems, grown_kib = run.stdout.strip().splitlines()
    assert int(grown_kib) < 64 * 1024, f"verifying it grew the peak by {grown_kib} KiB"
    assert json.loads(problems) == [
        "version 1: index.faiss holds 45 bytes, a flat index of 50 vectors of dim 16 holds 3245"]
