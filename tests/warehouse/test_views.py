"""Each migration carries its views' SQL; sql/views/ is the readable copy of the current ones."""

from pathlib import Path

from sqlalchemy import text

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.views import MIGRATION_VIEWS_DIR

ANALYSTS_VIEWS = Path(__file__).resolve().parents[2] / "sql" / "views"


def latest_migration_views() -> dict[str, Path]:
    latest: dict[str, Path] = {}
    for path in sorted(MIGRATION_VIEWS_DIR.glob("*.sql")):  # <revision>_<name>.sql, in revision order
        latest[path.stem.split("_", 1)[1]] = path
    return latest


def test_each_analysts_view_file_is_the_latest_migrations_sql() -> None:
    latest = latest_migration_views()
    assert sorted(latest) == sorted(path.stem for path in ANALYSTS_VIEWS.glob("*.sql"))
    for name, path in latest.items():
        assert (ANALYSTS_VIEWS / f"{name}.sql").read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), name


def test_migrations_build_views_without_the_sql_folder(warehouse_url: str, monkeypatch, tmp_path) -> None:
    # A wheel install has no sql/ folder: the migrations must not read it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pathlib.Path.read_text", _refusing_sql_folder(Path.read_text))
    wh = Warehouse(warehouse_url)
    wh.upgrade()
    with wh.connect() as connection:
        for name in latest_migration_views():
            connection.execute(text(f"SELECT * FROM {name} LIMIT 1")).all()
    wh.dispose()


def _refusing_sql_folder(read_text):  # type: ignore[no-untyped-def]
    def guarded(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert ANALYSTS_VIEWS not in self.resolve().parents, f"a migration read {self}"
        return read_text(self, *args, **kwargs)
    return guarded
