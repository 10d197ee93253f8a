"""One attempt in a git working tree: what it changed, and what becomes of those changes.

Before the run the tree is snapshotted (an own worktree is first made clean: leftovers of an
interrupted attempt are kept on ``refs/orchestratord/leftovers/...``; with ``merge``
integration the branch is brought up to date with the base branch). After a successful run the
tree is snapshotted again: the difference is the attempt's changes (tracked and untracked
files, ignored files and the daemon's own excluded). No changes is a FAIL unless the task
allows it; a guardrail hit in the added lines is BLOCKED.

PASS commits exactly those changes (parent: the commit the attempt started from), with the
task's id and summary as the message and ``Task:``, ``Track:``, ``Verification: PASS`` and
``Attempts:`` trailers, and merges it into the base branch where the track's integration says
so (a conflict blocks the task). Any other verdict keeps the changes on
``refs/orchestratord/attempts/TRACK/ID/N`` and puts the tree back as it was, so nothing leaks
into the next commit.

A daemon killed after git made an attempt's verified commit and before the store recorded the
PASS leaves that commit at the tree's HEAD. Before git moves the branch, the store records the
commit and what its PASS was verified against (:mod:`verification`): the attempt, taken up
again at the same number, finds the commit there (by its trailers). When HEAD is exactly the
commit recorded, the task still asks for what it was verified against, and the tree still holds
exactly that commit's work, the PASS was decided already: it is recorded (and the commit merged,
if it is not yet) without running anything again (:attr:`GitAttempt.verified`). Otherwise (a
person's commit with its trailers, amended or copied; a daemon of an older version that recorded
nothing; the verification commands, the promise or the guardrails changed; the tree changed)
the attempt runs again and the commit's changes count as the new run's, so that the same work
is not "no changes"; a PASS with the same tree keeps that commit instead of making another, a
PASS with another tree is committed on top of it (it may be merged already: replaced, it would
conflict with itself at the merge).

An attempt on a cluster whose runs the daemon left going when it ended is *re-attached* by the
next daemon: its runs may still be working in the tree, so nothing there is touched, and it goes
on from the tree and commit its first begin recorded. Unless its verified commit is at HEAD,
made after it began, the one the store recorded (:attr:`GitAttempt.settled`; a person's commit
with its trailers is not): its runs were all over then, there is nothing
to attach to, and the attempt is taken up again as one cut short by the daemon's end, which
finds that commit as above.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from . import gitlocks, gitwork, verification
from .attempt import AttemptResult, Note
from .errors import GitError
from .gitwork import Change
from .guardrails import Guardrails, evidence
from .model import TaskDef, TaskKey, Verdict
from .worktrees import Tree, Trees, in_thread, ref_part

SHOWN = 20
MAX_RUNS_AGAIN = 100
"""How many commits of one attempt, each on top of the last, are looked through for the
commit it started from (one per kill between a commit and its record)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt's result after git had its say, and what git made of the attempt."""

    result: AttemptResult
    files: tuple[str, ...] | None = None
    """The files the attempt changed (None outside git)."""
    commit: str | None = None
    saved_ref: str | None = None
    note: str = ""
    """Added to what the next attempt is told."""


def commit_message(task: TaskDef, attempts: int, verdict: str = "PASS", reason: str = "") -> str:
    summary = task.summary_line or "(no description)"
    subject = f"{task.key.id}: {summary}"
    if len(subject) > 72:
        subject = subject[:71].rstrip() + "…"
    body = (task.description or "").strip()
    paragraphs = []
    if body and body != summary:
        paragraphs.append("\n".join(textwrap.fill(p, 72) for p in body.split("\n") if p.strip()))
    if reason:
        paragraphs.append(textwrap.fill(reason, 72))
    return "\n\n".join([subject, *paragraphs, trailers(task.key, verdict, attempts)]) + "\n"


def trailers(key: TaskKey, verdict: str, attempts: int) -> str:
    """The lines that end an attempt's commit message and say whose commit it is."""
    return f"Task: {key.id}\nTrack: {key.track}\nVerification: {verdict}\nAttempts: {attempts}"


@dataclass(frozen=True, slots=True)
class _Recorded:
    """What an attempt's first begin recorded (see :attr:`GitAttempt._t0_file`)."""

    t0: str
    full: bool = False
    """The commits are recorded too (a daemon of an older version recorded the tree only)."""
    start: str | None = None
    adopted: str | None = None


def _listed(changes: list[Change]) -> str:
    names = [c.path for c in changes[:SHOWN]]
    more = f" (+{len(changes) - SHOWN} more)" if len(changes) > SHOWN else ""
    return ", ".join(names) + more


class GitAttempt:
    """The git side of one attempt (its gate, and its conclusion)."""

    def __init__(
        self,
        trees: Trees,
        tree: Tree,
        task: TaskDef,
        number: int,
        guardrails: Guardrails,
        scratch: Path,
        stamp: str,
        resumed: bool = False,
        after_stop: bool = False,
        reattached: bool = False,
        intents: Mapping[str, str] | None = None,
        verifies: str = "",
        committing: Callable[[str, str], None] | None = None,
    ) -> None:
        self.trees = trees
        self.tree = tree
        self.task = task
        self.number = number
        self.guardrails = guardrails
        self.scratch = scratch
        self.stamp = stamp
        self.resumed = resumed
        """The task's attempt of this number was interrupted: it is run again."""
        self.after_stop = after_stop
        """Each time it was interrupted, by the end of the daemon that ran it (a stop, a kill),
        never by an order: a PASS it verified and committed then is recorded (:attr:`verified`)."""
        self.reattached = reattached
        """Its runs were left going on a cluster when the daemon ended, and are attached to
        again: the tree is as they left it, or as they are leaving it."""
        self.intents: Mapping[str, str] = intents or {}
        """The commits a PASS of this attempt was about to put on its branch (of each run of it
        cut short; re-attached, of the run attached to), each with what it was verified
        against, as the store recorded them before git moved the branch: the only commits
        :attr:`verified` or :attr:`settled` may be."""
        self.verifies = verifies
        """What this attempt is verified against now (:func:`verification.fingerprint`)."""
        self.committing = committing
        """Records ``(commit, verifies)`` for good before git moves the branch to a PASS's
        commit (the store; None: nowhere, for an attempt without a row)."""
        self.unverified = ""
        """Why its own commit found at HEAD is not :attr:`verified` (for the log)."""
        self.settled: str | None = None
        """Re-attached: its verified commit, at HEAD, made after it began. Its runs were over
        then: the attempt is cut short by the daemon's end and taken up again as a new one of
        the same number (which finds that commit), not attached to; nor concluded here."""
        self.start: str | None = None
        self.adopted: str | None = None
        """This attempt's verified commit, made before an unclean stop (see the docstring)."""
        self.verified: str | None = None
        """:attr:`adopted`, when the tree holds exactly its work: a PASS to record, not to run."""
        self.t0 = gitwork.EMPTY_TREE
        self.t1: str | None = None
        self.changed: list[Change] = []
        self.locks: list[gitlocks.Found] = []
        """Git lock files that were in the way before the attempt: removed (stale) or left."""

    @property
    def root(self) -> Path:
        return self.tree.root

    def _snapshot(self) -> str:
        return gitwork.snapshot(self.root, self.tree.excludes, self.scratch, self.tree.index)

    # ------------------------------------------------------------------ before the run

    async def begin(self) -> list[str]:
        try:
            return await in_thread(self._begin)
        except GitError as exc:
            raise GitError(self._explained(str(exc))) from exc

    def _explained(self, message: str) -> str:
        """A git error, with what to do about a lock file it names."""
        return gitlocks.explain(message, self.locks)

    def _clear_locks(self) -> None:
        """Remove the stale lock files a killed git left where this attempt's git works."""
        tree = self.tree
        saved = (
            f"refs/orchestratord/attempts/{ref_part(tree.track)}/"
            f"{ref_part(self.task.key.id)}/{self.number}"
        )
        found = gitlocks.candidates(
            self.root,
            tree.index.parent,
            tree.repo.common,
            tree.own,
            tree.branch,
            tree.base if tree.own and tree.integration == "merge" else None,
            self.scratch,
            [saved],
        )
        self.locks = gitlocks.sweep(found, self.trees.started) if found else []

    def _begin(self) -> list[str]:
        self._clear_locks()
        notes = [f"git: {found.describe()}" for found in self.locks]
        if self.reattached:
            return self._rejoin(notes)
        tree = self.tree
        if tree.own:
            dirty = gitwork.dirty_files(self.root)
            ref = self._keep_leftovers() if dirty else None
            if ref is not None:
                notes.append(
                    f"git: the tree had uncommitted changes ({len(dirty)} files), kept on {ref}; "
                    "the tree was reset"
                )
        else:
            self._keep_index()
        orphan = self._unrecorded_commit()
        if orphan is None:  # (else the branch is brought up to date next time)
            synced = self.trees.sync(tree)
            if synced:
                notes.append(f"git: {synced}")
        self.start = gitwork.head(self.root)
        self.t0 = self._snapshot()
        if orphan is not None:
            self._adopt(orphan)
            # Before the tree recorded when the first run began counts: that commit says what
            # the attempt changed, and what else the checkout holds now (what verification
            # left, a person's edits meanwhile) is not part of its work.
            if self.after_stop:
                self._check_verified(orphan)
        if not tree.own:
            first = self._recorded() if self.resumed and self.verified is None else None
            before = None if first is None else first.t0
            if before is not None and before != self.t0:
                self.t0 = before
                notes.append(
                    "git: what this attempt's first run changed in the checkout before the daemon "
                    "stopped counts as this attempt's"
                )
        self._record_t0()
        if orphan is not None:
            notes.append(self._orphan_note(orphan))
        notes.append(self._where())
        return notes

    def _where(self) -> str:
        tree = self.tree
        where = "own worktree" if tree.own else "checkout"
        at = self.start[:12] if self.start else "no commit yet"
        return f"git: {where} {self.root} on {tree.branch or 'a detached HEAD'} at {at}"

    def _rejoin(self, notes: list[str]) -> list[str]:
        """Begin a re-attached attempt (:attr:`reattached`): nothing in the tree is touched,
        since its runs may still work there (no leftovers kept, no reset, no update from the
        base branch, the index copy of its first begin kept); it goes on from what its first
        begin recorded. Or it is :attr:`settled`."""
        orphan = self._unrecorded_commit()
        first = self._recorded()
        if orphan is not None and (first is None or not first.full or orphan != first.adopted):
            # Made after the attempt began (not the commit its first begin found and adopted).
            if self._its_pass(orphan, first):
                self.settled = orphan
                notes.append(
                    f"git: {orphan[:12]} at HEAD is this attempt's verified commit, made before "
                    "the daemon ended and never recorded; its runs on the cluster were over: the "
                    "attempt is taken up again"
                )
                return notes
            notes.append(
                f"git: {orphan[:12]} at HEAD carries this attempt's trailers but is not the commit "
                "the daemon recorded making (changed or made by hand since): its runs may still "
                "go on, and are attached to"
            )
        if first is not None and first.full:
            self.t0, self.start, self.adopted = first.t0, first.start, first.adopted
        else:
            self.start = gitwork.head(self.root)
            if first is not None:
                self.t0 = first.t0
            elif self.tree.own:  # (made clean at HEAD by its first begin)
                self.t0 = gitwork.tree_of(self.root, self.start)
            else:
                self.t0 = self._snapshot()
            self._record_t0()
        notes.append(self._where())
        return notes

    def _its_pass(self, orphan: str, first: _Recorded | None) -> bool:
        """Whether ``orphan``, a commit with this re-attached attempt's trailers made after it
        began, is the one its own PASS made once every run of it had ended: a commit the store
        recorded it about to put on its branch. Not a person's (an amend, a copied message):
        its runs may still go on, and are not to be cut short. Nothing recorded by a daemon of
        an older version (no full record of its first begin either): the commit of the window
        of a kill is by far the likelier."""
        if self.intents:
            return orphan in self.intents
        return first is None or not first.full

    def _unrecorded_commit(self) -> str | None:
        """HEAD, when it is a PASS commit of this very attempt (a resumed one: its number was
        interrupted, so no recorded attempt made it)."""
        if not self.resumed:
            return None
        head = gitwork.head(self.root)
        return head if head is not None and self._made_by_this_attempt(head) else None

    def _made_by_this_attempt(self, commit: str) -> bool:
        """Whether ``commit`` is a PASS commit of this attempt (by its trailers)."""
        lines = gitwork.out(self.root, "log", "-1", "--format=%B", commit).splitlines()
        wanted = trailers(self.task.key, "PASS", self.number).splitlines()
        return all(line in lines for line in wanted)

    def _adopt(self, orphan: str) -> None:
        """Start from the commit before ``orphan``, with its changes as this attempt's; before
        the first of this attempt's commits, when a run again made one on top of another
        (the daemon killed more than once in that window)."""
        start = gitwork.commit_of(self.root, f"{orphan}^1")
        for _ in range(MAX_RUNS_AGAIN):
            if start is None or not self._made_by_this_attempt(start):
                break
            start = gitwork.commit_of(self.root, f"{start}^1")
        self.start = start
        self.adopted = orphan
        base = gitwork.tree_of(self.root, self.start)
        undone = gitwork.changes(self.root, gitwork.tree_of(self.root, orphan), base)
        self.t0 = gitwork.apply_changes(self.root, self.t0, base, undone, self.scratch)

    def _check_verified(self, orphan: str) -> None:
        """:attr:`verified` when ``orphan`` is a commit the store recorded this attempt making,
        verified against what the task still asks, and the tree holds exactly its work (its
        changes then measured for good; else measured again after the run). Else
        :attr:`unverified` says why not."""
        recorded = self.intents.get(orphan)
        if recorded is None:
            # Amended or made by a person (with its trailers), or by a daemon of an older
            # version, which recorded nothing: running again is the safe side.
            self.unverified = (
                "but it is not the commit the daemon recorded making (changed or made by hand "
                "since, or by an older version of orchestratord)"
            )
            return
        changed = verification.changed(recorded, self.verifies)
        if changed:
            self.unverified = f"what it was verified against changed since ({', '.join(changed)})"
            return
        self._measure()
        if self.changed and self._tree_to_commit() == gitwork.tree_of(self.root, orphan):
            self.verified = orphan
        else:
            self.t1, self.changed = None, []
            self.unverified = "the tree changed since"

    def _orphan_note(self, orphan: str) -> str:
        """What the attempt's log says of its own commit found at HEAD."""
        found = (
            f"git: {orphan[:12]} at HEAD is this attempt's verified commit, made before it was "
            "cut short and never recorded; "
        )
        if orphan not in self.intents:  # nothing says it was verified: only its trailers
            joint = ", " if self.after_stop else "; "  # (a reason not to trust it follows)
            found = f"git: {orphan[:12]} at HEAD carries this attempt's trailers{joint}"
        if self.verified is not None:
            then = (
                "the tree still holds exactly its work: its PASS is recorded, nothing is run again"
            )
        elif self.after_stop:
            then = f"{self.unverified}, so the attempt runs again; its changes count as its own"
        else:
            then = "its changes count as this attempt's"
        return found + then

    @property
    def _t0_file(self) -> Path:
        """The tree before the attempt, the commit it started from and the commit of its own
        it adopted, until it ends: in a checkout, an attempt cut short (the daemon stopped) and
        run again counts what its first run changed as its own, not as the user's changes from
        before; a re-attached attempt goes on from there (:meth:`_rejoin`)."""
        return self.scratch.with_suffix(".t0")

    def _record_t0(self) -> None:
        key = self.task.key
        lines = [key.id, str(self.number), self.t0, self.start or "", self.adopted or ""]
        self._t0_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _recorded(self) -> _Recorded | None:
        """What this attempt's first begin recorded (None: nothing, or another attempt's)."""
        try:
            lines = self._t0_file.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        if len(lines) not in (3, 5) or lines[:2] != [self.task.key.id, str(self.number)]:
            return None
        found = gitwork.run(self.root, "cat-file", "-e", f"{lines[2]}^{{tree}}", check=False)
        if found.returncode != 0:
            return None
        if len(lines) == 3:  # (a daemon of an older version recorded the tree only)
            return _Recorded(lines[2])
        start, adopted = lines[3] or None, lines[4] or None
        if any(c is not None and gitwork.commit_of(self.root, c) != c for c in (start, adopted)):
            return _Recorded(lines[2])  # (gone since: pruned)
        return _Recorded(lines[2], True, start, adopted)

    @property
    def _kept_index(self) -> Path:
        return self.scratch.with_suffix(".before")

    def _keep_index(self) -> None:
        """A shared checkout's index as it was, to undo what the agent staged or committed."""
        gitwork.copy_index(self.tree.index, self._kept_index)

    def _put_index_back(self) -> None:
        if self.tree.own:
            return
        kept = self._kept_index
        if kept.exists():
            os.replace(kept, self.tree.index)

    def _keep_leftovers(self) -> str | None:
        """Keep what differs from HEAD on a ref, and reset; None: nothing did (an index out
        of date: the daemon was killed between moving HEAD and resetting the tree)."""
        head = gitwork.head(self.root)
        snap = self._snapshot()
        if head is not None and snap == gitwork.tree_of(self.root, head):
            gitwork.reset_hard(self.root, head)
            return None
        env = gitwork.ident_env(self.tree.repo)
        message = (
            f"Uncommitted changes found before attempt {self.number} of {self.task.key.id}\n\n"
            f"Task: {self.task.key.id}\nTrack: {self.task.key.track}\n"
        )
        commit = gitwork.commit_tree(self.root, snap, [head] if head else [], message, env)
        ref = f"refs/orchestratord/leftovers/{ref_part(self.tree.track)}/{self.stamp}"
        gitwork.update_ref(self.root, ref, commit)
        if head:
            gitwork.reset_hard(self.root, head)
        return ref

    # ------------------------------------------------------------------ after the run

    def _measure(self) -> None:
        if self.t1 is None:
            self.t1 = self._snapshot()
            self.changed = gitwork.changes(self.root, self.t0, self.t1)

    async def after_run(self, note: Note, what: str) -> AttemptResult | None:
        """The gate: the run changed something, and nothing it added hits a guardrail."""
        try:
            diff = await in_thread(self._after_run)
        except (GitError, OSError) as exc:
            reason = f"git: {self._explained(str(exc))}"
            note(f"--- {reason}")
            return AttemptResult(Verdict.BLOCKED, reason, 0, reason + "\n")
        if self.changed:
            note(f"--- changes: {len(self.changed)} file(s): {_listed(self.changed)}")
        if not self.changed and not self.task.allow_no_changes:
            reason = (
                f"no changes: the {what} changed no file "
                '(a task that needs none can say "allow_no_changes": true)'
            )
            note(f"--- {reason}")
            return AttemptResult(Verdict.FAIL, reason, 0, reason + "\n")
        hits = self.guardrails.scan(diff) if diff else []
        if hits:
            reason = evidence(hits)
            for hit in hits:
                note(f"--- guardrail: {hit}")
            details = "\n".join(f"- {hit}" for hit in hits)
            failure = (
                f"{reason}\nLines added by the attempt match patterns that are not allowed:\n"
                f"{details}\n"
            )
            return AttemptResult(Verdict.BLOCKED, reason, 0, failure)
        return None

    def _after_run(self) -> str:
        self._measure()
        if not self.changed or not self.guardrails.patterns:
            return ""
        assert self.t1 is not None
        return gitwork.diff(self.root, self.t0, self.t1)

    # ------------------------------------------------------------------ after the verdict

    def leave(self) -> None:
        """The attempt's runs worked elsewhere (a checkout of their own on a cluster's node):
        nothing that changed in this tree meanwhile is theirs. The tree is left as it is; only
        the attempt's own files go."""
        self._kept_index.unlink(missing_ok=True)
        self._t0_file.unlink(missing_ok=True)

    async def conclude(self, result: AttemptResult, commit: bool) -> Outcome:
        """Commit a PASS (and integrate it); keep anything else on a ref and reset the tree.

        A git failure here blocks a PASS (the verified work stays in the tree for a person)
        and is added to the reason of anything else.

        Shielded: a commit and its merge belong together, and the verdict that follows is
        recorded. A cancellation that comes meanwhile (the daemon stopping, the task leaving
        its file) takes effect once git is done. Its work runs in threads, which no
        cancellation interrupts anyway; only the wait for the repository's lock is added.
        """
        with anyio.CancelScope(shield=True):
            try:
                outcome = await self._conclude(result, commit)
            except (GitError, OSError) as exc:
                problem = self._explained(str(exc))
                files = tuple(sorted(c.path for c in self.changed))
                if result.verdict is Verdict.PASS:
                    reason = f"git: verified, but not committed: {problem}"
                    blocked = replace(result, verdict=Verdict.BLOCKED, reason=reason)
                    outcome = Outcome(blocked, files)
                else:
                    reason = f"{result.reason}; git: the changes were not kept and reset: {problem}"
                    outcome = Outcome(replace(result, reason=reason), files)
            self._t0_file.unlink(missing_ok=True)
        return outcome

    async def _conclude(self, result: AttemptResult, commit: bool) -> Outcome:
        if result.verdict is Verdict.PASS:
            commit_id = await in_thread(self._commit, commit)
            files = tuple(sorted(c.path for c in self.changed))
            if commit_id is None:
                return Outcome(result, files)
            self._record(commit_id)  # for good, before the branch moves
            await in_thread(self._move_to, commit_id)
            message = (
                f"Merge {self.tree.branch}: {self.task.key.id}\n\n"
                f"Task: {self.task.key.id}\nTrack: {self.task.key.track}\n"
            )
            problem = await self.trees.integrate(self.tree, commit_id, message)
            if problem is not None:
                problem = self._explained(problem)
                blocked = replace(
                    result,
                    verdict=Verdict.BLOCKED,
                    reason=problem,
                    failure_output=problem + "\n",
                )
                return Outcome(blocked, files, commit_id)
            return Outcome(result, files, commit_id)
        saved = await in_thread(self._save_and_reset, result)
        files = tuple(sorted(c.path for c in self.changed))
        note = ""
        if saved:
            note = (
                f"\nThe previous attempt's changes were kept on {saved} "
                f"(`git show {saved}`); the working tree was reset.\n"
            )
        return Outcome(result, files, None, saved, note)

    def _commit(self, enabled: bool) -> str | None:
        """The commit of a PASS (made, the branch not moved yet); None: none to make."""
        self._measure()
        root = self.root
        if not self.changed:
            if self.tree.own and self.start:
                gitwork.reset_hard(root, self.start)
            self._put_index_back()
            return None
        if not enabled and not self.tree.own:
            self._put_index_back()
            return None  # git.commit = false: the changes stay in the checkout
        tree = self._tree_to_commit()
        message = commit_message(self.task, self.number)
        env = gitwork.ident_env(self.tree.repo)
        parents = [self.start] if self.start else []
        if self.adopted is not None and tree == gitwork.tree_of(root, self.adopted):
            commit = self.adopted  # the same work, verified again: its commit stands
        else:
            if self.adopted is not None:
                # The commit made before the daemon stopped may be merged (or pushed) since:
                # it stays, and what this run changed differently goes on top of it.
                parents = [self.adopted]
                message = commit_message(self.task, self.number, reason=self._follows())
            commit = gitwork.commit_tree(root, tree, parents, message, env)
        return commit

    def _record(self, commit: str) -> None:
        """Record the commit a PASS is about to put on the branch, and what it was verified
        against: a daemon killed once the branch moved and before the PASS is recorded
        leaves the commit at HEAD, and the next one trusts only a commit so recorded."""
        if self.committing is None:
            return
        verifies = self.intents[commit] if commit == self.verified else self.verifies
        self.committing(commit, verifies)

    def _move_to(self, commit: str) -> None:
        """Move the branch to the PASS's ``commit``; the tree and index follow."""
        root = self.root
        gitwork.update_ref(root, "HEAD", commit, gitwork.head(root))
        if self.tree.own:
            gitwork.reset_hard(root, commit)  # also clears what verification left behind
        else:
            self._put_index_back()
            self._sync_index()

    def _tree_to_commit(self) -> str:
        """The tree a PASS commits: the commit the attempt started from, with its changes."""
        assert self.t1 is not None
        base_tree = gitwork.tree_of(self.root, self.start)
        if self.t0 == base_tree:
            return self.t1
        return gitwork.apply_changes(self.root, base_tree, self.t1, self.changed, self.scratch)

    def _follows(self) -> str:
        assert self.adopted is not None
        return (
            f"The attempt ran again after it was cut short before its verified commit "
            f"{self.adopted[:12]} was recorded; this commit holds what the run again changed."
        )

    def _sync_index(self) -> None:
        """In a shared checkout: the committed paths' index entries follow the new HEAD."""
        paths = b"\0".join(c.path.encode("utf-8", "surrogateescape") for c in self.changed)
        gitwork.run(
            self.root,
            "reset",
            "--quiet",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
            env={"GIT_LITERAL_PATHSPECS": "1"},
            stdin=paths + b"\0",
            check=False,
        )

    def _save_and_reset(self, result: AttemptResult) -> str | None:
        self._measure()
        root = self.root
        saved = None
        if self.changed:
            assert self.t1 is not None
            env = gitwork.ident_env(self.tree.repo)
            parents = [self.start] if self.start else []
            if self.t0 != gitwork.tree_of(root, self.start):
                before = f"The working tree before attempt {self.number} of {self.task.key.id}\n"
                parents = [gitwork.commit_tree(root, self.t0, parents, before, env)]
            message = commit_message(
                self.task, self.number, result.verdict.value, result.reason or ""
            )
            commit = gitwork.commit_tree(root, self.t1, parents, message, env)
            saved = (
                f"refs/orchestratord/attempts/{ref_part(self.tree.track)}/"
                f"{ref_part(self.task.key.id)}/{self.number}"
            )
            if gitwork.ref_exists(root, saved):  # an interrupted attempt of the same number
                saved += f"-{self.stamp}"
            gitwork.update_ref(root, saved, commit)
        self._reset()
        return saved

    def _reset(self) -> None:
        root = self.root
        now = gitwork.head(root)
        if self.tree.own:
            if self.start:
                gitwork.reset_hard(root, self.start)
            return
        if self.start and now != self.start:
            gitwork.update_ref(root, "HEAD", self.start, now)  # the agent committed: undo it
        self._put_index_back()
        if self.changed:
            gitwork.restore_paths(root, self.t0, self.changed, self.scratch)
