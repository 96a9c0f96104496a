"""Incremental, idempotent updates of the store from providers.

For each item (a symbol's bars at a frequency, a macro series, a news query):
1. fetch only what is newer than the stored data, plus an overlap of the last ``overlap_bars`` bars;
2. validate the batch (``quality.validate_bars``): bad rows go to the quarantine table with the rule
   that caught them (exact duplicate bars the provider collapsed are counted; a time repeated with
   different values is quarantined in every version);
3. compare the overlap with what is stored: changed values are revisions (the new ones win); if every
   overlapping price changed by the same factor the vendor re-adjusted its history (a dividend or
   split), so the whole history is fetched again; so it is when the new bars shift level like an
   unadjusted split (reconciled against the vendor's adjusted history: if that still shows the shift,
   the bars on the shorter side are quarantined);
4. look for gaps against the instrument's calendar: gaps the vendor can fill are backfilled, the rest
   are recorded in the ``gaps`` table (and not asked for again);
5. write the partition atomically; identical content writes nothing, so a second run in a row
   changes nothing.

One failing item never stops the others; a provider that cannot be reached at all is skipped for the
rest of the run, and the store keeps what it has (the embedded sample on a fresh machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from hflite import logs
from hflite.data.providers import (
    MissingKeyError,
    NotSupportedError,
    ProviderError,
    TransientError,
    make_provider,
)
from hflite.data.store import DataNotFoundError, Store, bars_key
from hflite.domain.instrument import AssetClass, Calendar, Instrument, UnknownInstrumentError, instrument_for

Kind = Literal["bars", "series", "vintage", "news", "fundamentals"]
Status = Literal["updated", "unchanged", "failed", "skipped"]


@dataclass(frozen=True)
class UpdateItem:
    kind: Kind
    provider: str
    target: str  # symbol, series id, or comma-separated news tickers
    freq: str = "1d"
    asset_class: str | None = None
    options: tuple[tuple[str, Any], ...] = ()  # provider constructor options, e.g. (("exchange", "binance"),)
    since: str | None = None  # news: first day to fetch (default: the last 7 days)

    @property
    def label(self) -> str:
        return (
            f"{self.kind} {self.target}"
            + (f" {self.freq}" if self.kind == "bars" else "")
            + f" ({self.provider})"
        )


@dataclass
class ItemResult:
    item: UpdateItem
    status: Status
    rows: int = 0  # rows new or changed in the store
    quarantined: int = 0
    revisions: int = 0
    gaps_filled: int = 0
    gaps_recorded: int = 0
    message: str = ""
    duplicates: int = 0  # exact duplicate bars the provider collapsed


@dataclass(frozen=True)
class _Checked:
    """A validated batch: its clean rows, the rows to quarantine, and the likely split ratio of a level
    shift in it (None when it has none with a split signature)."""

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    split: float | None


@dataclass
class Updater:
    """Runs update items against a store. ``factory`` builds providers (tests inject fakes)."""

    store: Store
    now: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    history_start: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2000-01-01", tz="UTC"))
    overlap_bars: int = 5
    factory: Callable[..., Any] = make_provider
    _providers: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = field(default_factory=dict)
    _down: dict[str, str] = field(default_factory=dict)

    def run(
        self, items: list[UpdateItem], progress: Callable[[UpdateItem, int], None] | None = None
    ) -> list[ItemResult]:
        log = logs.get("hflite.data.update")
        results = []
        for n, item in enumerate(items):
            if progress:
                progress(item, n)
            result = self._one(item)
            log.info(
                "data.update",
                item=item.label,
                status=result.status,
                rows=result.rows,
                quarantined=result.quarantined,
                message=result.message,
            )
            results.append(result)
        for prov in self._providers.values():
            prov.close()
        return results

    def _one(self, item: UpdateItem) -> ItemResult:
        if item.provider in self._down:
            return ItemResult(item, "skipped", message=self._down[item.provider] + self._kept(item))
        try:
            provider = self._provider(item)
            if item.kind == "bars":
                return self._bars(provider, item)
            if item.kind in ("series", "vintage"):
                return self._series(provider, item)
            if item.kind == "news":
                return self._news(provider, item)
            return self._fundamentals(provider, item)
        except MissingKeyError as exc:  # stops only this provider, and names the variable
            self._down[item.provider] = str(exc)
            return ItemResult(item, "skipped", message=str(exc) + self._kept(item))
        except TransientError as exc:
            if exc.unreachable:  # offline: keep what the store has
                self._down[item.provider] = f"offline: {item.provider} could not be reached"
                return ItemResult(item, "skipped", message=f"offline: {exc}" + self._kept(item))
            return ItemResult(item, "failed", message=str(exc) + self._kept(item))
        except (ProviderError, ValueError) as exc:
            return ItemResult(item, "failed", message=str(exc) + self._kept(item))

    def _kept(self, item: UpdateItem) -> str:
        """What the store keeps for a failed item, from the manifest: the partition's file is not read
        again (it may be the very thing that failed, e.g. damaged on disk)."""
        if item.kind != "bars":
            return ""
        key = f"bars/{item.target}/{item.freq}"
        info = next((p for p in self.store.partitions() if p.key == key), None)
        if info is None or info.last is None:
            return ""
        return f"; the store keeps its data for {item.target} (last bar {info.last:%Y-%m-%d %H:%M})"

    def _provider(self, item: UpdateItem) -> Any:
        key = (item.provider, item.options)
        if key not in self._providers:
            self._providers[key] = self.factory(item.provider, **dict(item.options))
        return self._providers[key]

    # -- bars -----------------------------------------------------------------------------------
    def _bars(self, provider: Any, item: UpdateItem) -> ItemResult:
        from hflite.data.quality import listed_splits

        sym, freq = item.target, item.freq
        inst = _instrument(sym, item.asset_class)
        splits = listed_splits(self.store).get(sym)
        stored = self._stored_bars(sym, freq)
        start = self.history_start if stored.empty else stored.ts.iloc[-min(self.overlap_bars, len(stored))]
        result = ItemResult(item, "unchanged")
        checked = self._validated(self._fetch(provider, item, start, result), inst, freq, sym, splits)
        refetch = None
        if not stored.empty and not checked.clean.empty:
            factor, result.revisions = _compare_overlap(stored, checked.clean)
            if factor is not None:
                refetch = f"the vendor re-adjusted {sym}'s history (overlap prices x{factor:.6f})"
        if refetch is None and not stored.empty and checked.split is not None:
            ratio = f"1:{checked.split:g}" if checked.split >= 1 else f"reverse {1 / checked.split:g}:1"
            refetch = f"the new bars look like an unadjusted split {ratio} of {sym}"
        if refetch is not None:
            result.duplicates = 0  # the first answer is discarded
            checked = self._validated(
                self._fetch(provider, item, self.history_start, result), inst, freq, sym, splits
            )
            same = " (the vendor's history has the same shift: quarantined)" if checked.split else ""
            result.message = f"{refetch}; fetched it again{same}"
            stored = stored.iloc[0:0]
        self._quarantine(sym, freq, checked.quarantined, result)
        merged = _merge(stored, checked.clean)
        merged = self._fill_gaps(provider, item, inst, merged, result, splits)
        if result.duplicates:
            _note(result, f"{result.duplicates} exact duplicate bar(s) collapsed")
        if merged.empty:
            result.message = result.message or "the provider has no bars for this window"
            return result
        before = self.store.version(bars_key(sym, freq)) if not stored.empty else None
        info = self.store.write_bars(
            sym, freq, merged, asset_class=inst.asset_class.value, source=item.provider
        )
        if info.version != before:
            result.status = "updated"
            result.rows = len(merged) - len(stored) + result.revisions if len(stored) else len(merged)
        return result

    def _fetch(
        self, provider: Any, item: UpdateItem, start: pd.Timestamp, result: ItemResult, end: Any = None
    ) -> pd.DataFrame:
        """The provider's bars, counting the exact duplicates it collapsed."""
        from hflite.data.providers.base import DUPLICATES_COLLAPSED

        batch = provider.bars(item.target, item.freq, start, self.now if end is None else end)
        result.duplicates += int(batch.attrs.get(DUPLICATES_COLLAPSED, 0))
        return batch

    def _validated(
        self, batch: pd.DataFrame, inst: Instrument, freq: str, sym: str, splits: pd.Series | None
    ) -> _Checked:
        """The batch's clean rows and the rows to quarantine. Validated together with the stored bars
        before it (at least 60, and more than the batch holds), so rules that look back (spikes) see the
        same history as on the whole series and a level shift is judged against the stored level."""
        from hflite.data.quality import validate_bars

        if batch.empty:
            return _Checked(batch, batch.iloc[0:0], None)
        stored = self._stored_bars(sym, freq)
        context = stored[stored.ts < batch.ts.min()].tail(max(60, len(batch) + 1))
        check = validate_bars(
            pd.concat([context, batch], ignore_index=True) if len(context) else batch,
            inst,
            freq,
            splits=splits,
        )
        held = check.quarantined[~check.quarantined.ts.isin(context.ts)] if len(check.quarantined) else None
        shifts = check.level_shifts
        split = shifts.loc[~shifts.ts.isin(context.ts) & shifts.split.notna(), "split"]
        return _Checked(
            check.clean[~check.clean.ts.isin(context.ts)].reset_index(drop=True),
            held if held is not None else check.quarantined,
            float(split.iloc[0]) if len(split) else None,
        )

    def _quarantine(self, sym: str, freq: str, rows: pd.DataFrame, result: ItemResult) -> None:
        from hflite.data.quality import quarantine

        if len(rows):
            result.quarantined += int(quarantine(self.store, bars_key(sym, freq), rows, found_at=self.now))

    def _stored_bars(self, sym: str, freq: str) -> pd.DataFrame:
        try:
            return self.store.read_bars(sym, freq)
        except DataNotFoundError:
            return pd.DataFrame(columns=["ts", "open", "high", "low", "close", "volume"])

    def _fill_gaps(
        self,
        provider: Any,
        item: UpdateItem,
        inst: Instrument,
        merged: pd.DataFrame,
        result: ItemResult,
        splits: pd.Series | None,
    ) -> pd.DataFrame:
        from hflite.engine.market import calendar_gaps

        if len(merged) < 2:
            return merged
        gaps = calendar_gaps(inst, item.freq, pd.DatetimeIndex(merged.ts))
        known = self._recorded_gaps(bars_key(item.target, item.freq))
        gaps = gaps.difference(known)
        if len(gaps) == 0:
            return merged
        batch = self._fetch(provider, item, gaps[0], result, end=gaps[-1])
        checked = self._validated(batch, inst, item.freq, item.target, splits)
        self._quarantine(item.target, item.freq, checked.quarantined, result)
        found = checked.clean[checked.clean.ts.isin(gaps)]
        result.gaps_filled = len(found)
        missing = gaps.difference(pd.DatetimeIndex(found.ts))
        if len(missing):
            result.gaps_recorded = len(missing)
            self._record_gaps(bars_key(item.target, item.freq), missing, item.provider)
        return _merge(merged, found)

    def _recorded_gaps(self, key: str) -> pd.DatetimeIndex:
        try:
            table = self.store.read_table("gaps")
        except DataNotFoundError:
            return pd.DatetimeIndex([], tz="UTC")
        return pd.DatetimeIndex(table.loc[table.key == key, "ts"])

    def _record_gaps(self, key: str, missing: pd.DatetimeIndex, provider: str) -> None:
        rows = pd.DataFrame({"key": key, "ts": missing, "provider": provider, "recorded_at": self.now})
        try:
            table = pd.concat([self.store.read_table("gaps"), rows], ignore_index=True)
        except DataNotFoundError:
            table = rows
        table = table.drop_duplicates(["key", "ts"], keep="first")
        self.store.write_table("gaps", table)

    # -- series, news, fundamentals ---------------------------------------------------------------
    def _series(self, provider: Any, item: UpdateItem) -> ItemResult:
        vintage = item.kind == "vintage"
        name = f"{item.target}.first_release" if vintage else item.target
        try:
            stored = (
                self.store.read_table(_vintage_table(item.target))
                if vintage
                else self.store.read_series(name)
            )
        except DataNotFoundError:
            stored = pd.DataFrame(columns=["date", "value"])
        # macro values are revised for months: re-read the last two years every time
        start = (
            self.history_start
            if stored.empty
            else pd.Timestamp(stored.date.iloc[-1]) - pd.Timedelta(days=730)
        )
        batch = provider.series(item.target, start, self.now, vintage=vintage)
        result = ItemResult(item, "unchanged")
        if batch.empty:
            result.message = "no new observations"
            return result
        merged = _merge(stored, batch, on="date")
        if vintage:
            before = self._table_version(_vintage_table(item.target))
            self.store.write_table(_vintage_table(item.target), merged)
            changed = self._table_version(_vintage_table(item.target)) != before
        else:
            before = self.store.version(f"macro/{name}") if not stored.empty else None
            changed = (
                self.store.write_series(name, merged[["date", "value"]], source=item.provider).version
                != before
            )
        if changed:
            result.status, result.rows = "updated", max(len(merged) - len(stored), 0)
        return result

    def _table_version(self, name: str) -> str | None:
        try:
            return self.store.version(f"table/{name}")
        except DataNotFoundError:
            return None

    def _news(self, provider: Any, item: UpdateItem) -> ItemResult:
        tickers = [t for t in item.target.split(",") if t]
        start = pd.Timestamp(item.since, tz="UTC") if item.since else self.now - pd.Timedelta(days=7)
        batch = provider.news(tickers, start, self.now)
        written = self.store.write_news(batch, source=item.provider)
        status: Status = "updated" if written else "unchanged"
        return ItemResult(item, status, rows=int(written or 0), message=f"{len(batch)} headlines fetched")

    def _fundamentals(self, provider: Any, item: UpdateItem) -> ItemResult:
        batch = provider.fundamentals(item.target)
        written = self.store.write_fundamentals(batch, source=item.provider)
        return ItemResult(item, "updated" if written else "unchanged", rows=int(written or 0))


def _note(result: ItemResult, text: str) -> None:
    result.message = f"{result.message}; {text}" if result.message else text


def _vintage_table(series_id: str) -> str:
    return f"alfred_{series_id.lower()}"


def _instrument(symbol: str, asset_class: str | None) -> Instrument:
    try:
        return instrument_for(symbol)
    except UnknownInstrumentError:
        cls = AssetClass(asset_class or "equity")
        calendar = {AssetClass.CRYPTO: Calendar.ALWAYS, AssetClass.FX: Calendar.FX}.get(cls, Calendar.XNYS)
        return Instrument(symbol, cls, "USD", calendar, 0.01, 1.0 if cls is not AssetClass.CRYPTO else 1e-5)


def _merge(old: pd.DataFrame, new: pd.DataFrame, on: str = "ts") -> pd.DataFrame:
    """Old rows, replaced by new ones where both have the same time; sorted."""
    if old.empty:
        return new.sort_values(on, ignore_index=True)
    if new.empty:
        return old.sort_values(on, ignore_index=True)
    keep = old[~old[on].isin(new[on])]
    return pd.concat([keep, new[old.columns.intersection(new.columns)]], ignore_index=True).sort_values(
        on, ignore_index=True
    )


def _compare_overlap(stored: pd.DataFrame, fresh: pd.DataFrame) -> tuple[float | None, int]:
    """(re-adjustment factor or None, number of revised rows) over the bars both hold."""
    both = stored.merge(fresh, on="ts", suffixes=("_old", "_new"))
    if both.empty:
        return None, 0
    old, new = both.close_old.to_numpy(float), both.close_new.to_numpy(float)
    changed = ~np.isclose(old, new, rtol=1e-7, atol=0.0)
    if not changed.any():
        return None, 0
    ratio = new / old
    if changed.all() and len(ratio) >= 2 and np.ptp(ratio) <= 1e-6 * abs(ratio.mean()):
        return float(ratio.mean()), int(changed.sum())
    return None, int(changed.sum())


def summary_rows(results: list[ItemResult]) -> list[list[str]]:
    """One row per item for the terminal table."""
    return [
        [
            r.item.label,
            r.status,
            str(r.rows),
            str(r.quarantined),
            str(r.revisions),
            f"{r.gaps_filled}/{r.gaps_recorded}",
            r.message,
        ]
        for r in results
    ]


__all__ = ["ItemResult", "UpdateItem", "Updater", "summary_rows", "NotSupportedError"]


def update_items(cfg: Any, only: str | None = None) -> list[UpdateItem]:
    """What ``[data.update]`` (``cfg``) keeps current: daily and intraday bars, macro series and news
    (``only``: one of bars, series or news)."""
    items: list[UpdateItem] = []
    if only in (None, "bars"):
        for sym in cfg.symbols:
            inst = _instrument(sym, None)
            items.append(
                UpdateItem("bars", cfg.providers[inst.asset_class], sym, "1d", inst.asset_class.value)
            )
        for it in cfg.intraday:
            opts = (("exchange", it.exchange),) if it.provider == "ccxt" and it.exchange else ()
            cls = it.asset_class.value if it.asset_class else None
            items.append(UpdateItem("bars", it.provider, it.symbol, it.freq, cls, opts))
    if only in (None, "series"):
        items += [UpdateItem("series", cfg.series_provider, sid) for sid in cfg.series]
    if only in (None, "news") and cfg.news_symbols:
        items.append(UpdateItem("news", cfg.news_provider, ",".join(cfg.news_symbols)))
    return items


def refetcher(cfg: Any) -> Callable[[Any], pd.DataFrame]:
    """How ``Store.repair`` gets a partition again when no intact version is kept: from the embedded
    sample for sample data, else from its provider through an Updater into a scratch store (``cfg``:
    ``[data.update]``, for the configured providers and history start)."""

    def refetch(info: Any) -> pd.DataFrame:
        import tempfile

        from hflite.data.sample import SAMPLE_SOURCE_PREFIX, read_sample_file, sample_catalog

        if info.source.startswith(SAMPLE_SOURCE_PREFIX):
            found = next((f for f in sample_catalog() if f.key == info.key), None)
            if found is not None:
                return read_sample_file(found)
        item = repair_item(cfg, info)
        if item is None:
            raise DataNotFoundError(f"no provider fetches {info.kind} partitions")
        with tempfile.TemporaryDirectory() as scratch_dir:
            scratch = Store(scratch_dir)
            start = pd.Timestamp(cfg.history_start, tz="UTC")
            updater = Updater(scratch, history_start=start, overlap_bars=cfg.overlap_bars)
            (result,) = updater.run([item])
            if result.status != "updated":
                raise DataNotFoundError(result.message or f"{item.provider} returned no data")
            if info.kind == "bars":
                return scratch.read_bars(info.symbol, info.freq)
            return scratch.read_series(info.symbol)

    return refetch


def repair_item(cfg: Any, info: Any) -> UpdateItem | None:
    """The update item that fetches a bar or macro partition again: from the provider that wrote it,
    else the one configured in ``[data.update]``; None for other kinds."""
    from hflite.data.providers import REGISTRY

    if info.kind == "macro":
        provider = info.source if info.source in REGISTRY else cfg.series_provider
        return UpdateItem("series", provider, info.symbol)
    if info.kind != "bars":
        return None
    configured = [i for i in update_items(cfg, "bars") if (i.target, i.freq) == (info.symbol, info.freq)]
    if info.source in REGISTRY:
        opts = next((i.options for i in configured if i.provider == info.source), ())
        return UpdateItem("bars", info.source, info.symbol, info.freq, info.asset_class, opts)
    if configured:
        return configured[0]
    if info.freq == "1d" and info.asset_class:
        provider = cfg.providers[AssetClass(info.asset_class)]
        return UpdateItem("bars", provider, info.symbol, "1d", info.asset_class)
    return None
