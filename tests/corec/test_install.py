"""`corec-kit corec install`: detection, never overwriting without --force, nothing outside."""

from __future__ import annotations

import json
from pathlib import Path

from corec_standins import make_registry_tree, run_install


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    root = make_registry_tree(tmp_path / "corec")
    assert run_install(str(root), "--name", "kit").exit_code == 0
    main = root / "plugins/kit/main.py"
    main.write_text("# edited\n")
    again = run_install(str(root), "--name", "kit")
    assert again.exit_code == 1
    assert "--force" in again.output
    assert main.read_text() == "# edited\n"
    forced = run_install(str(root), "--name", "kit", "--force")
    assert forced.exit_code == 0
    assert "from corec_plugin_kit.corec_adapter import inicializar" in main.read_text()
    conf = json.loads((root / "plugins/kit/config.json").read_text())
    assert conf == {"kit": {"name": "kit"}}


def test_writes_nothing_outside_the_root(tmp_path: Path) -> None:
    root = make_registry_tree(tmp_path / "corec")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "plugins" / "corec_kit").symlink_to(outside, target_is_directory=True)
    result = run_install(str(root))
    assert result.exit_code == 1
    assert "outside the CoreC root" in result.output
    assert list(outside.iterdir()) == []

    (root / "plugins" / "corec_kit").unlink()
    (root / "plugins" / "corec_kit").mkdir()
    (root / "plugins" / "corec_kit" / "main.py").symlink_to(outside / "x.py")
    linked = run_install(str(root), "--force")
    assert linked.exit_code == 1
    assert "symlink" in linked.output
    assert list(outside.iterdir()) == []
    assert not (root / "plugins" / "corec_kit" / "config.json").exists()  # all or nothing


def test_layout_detection(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    result = run_install(str(bare))
    assert result.exit_code == 1
    assert "not a CoreC tree" in result.output
    v4 = tmp_path / "repo" / "corec_v4" / "src" / "plugins"
    v4.mkdir(parents=True)
    (v4 / "plugin_manager.py").write_text("")
    ok = run_install(str(tmp_path / "repo"))
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "repo/corec_v4/src/plugins/corec_kit/plugin.json").is_file()
    assert (tmp_path / "repo/corec_v4/configs/plugins/corec_kit/corec_kit.yaml").is_file()
    bad = run_install(str(bare), "--name", "no-dash", "--layout", "registry")
    assert bad.exit_code == 2
