"""Drives `spore daemon` through the Python transmission-rpc library (crates/spore/tests/transmission_rpc.rs).

Usage: client.py PORT TOKEN TORRENT_FILE MOVE_DIR
Adds TORRENT_FILE (as metainfo), waits for it to finish, reads every field the clients read, sets
labels, moves the data to MOVE_DIR, removes the torrent with its data. Prints JSON lines of what it
saw for the Rust test to check; exits non-zero on any failure.
"""

import json
import sys
import time

from transmission_rpc import Client

FIELDS = [
    "id", "hashString", "name", "status", "percentDone", "rateDownload", "rateUpload", "eta",
    "totalSize", "sizeWhenDone", "leftUntilDone", "downloadDir", "error", "errorString",
    "peersConnected", "uploadRatio", "uploadedEver", "downloadedEver", "addedDate", "doneDate",
    "isFinished", "labels", "files", "fileStats", "priorities", "wanted", "trackers",
    "trackerStats", "peers", "magnetLink", "queuePosition", "seedRatioLimit", "seedRatioMode",
]


def wait(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main():
    port, token, torrent_file, move_dir = sys.argv[1:5]
    c = Client(host="127.0.0.1", port=int(port), username="python", password=token)
    session = c.get_session()
    print(json.dumps({"step": "session", "version": session.version, "rpc_version": session.rpc_version,
                      "download_dir": session.download_dir}), flush=True)

    with open(torrent_file, "rb") as f:
        added = c.add_torrent(f, labels=["first"])
    tid = added.id
    print(json.dumps({"step": "added", "id": tid, "hash": added.hashString, "name": added.name}), flush=True)

    done = wait("100 %", lambda: (lambda t: t if t.percent_done == 1.0 and t.status == "seeding" else None)(
        c.get_torrent(tid, arguments=FIELDS)))
    missing = [f for f in FIELDS if f not in done.fields]
    files = [{"name": f.name, "size": f.size, "completed": f.completed, "selected": f.selected,
              "priority": int(f.priority)} for f in done.get_files()]
    print(json.dumps({"step": "done", "missing": missing, "fields": done.fields, "files": files,
                      "status": str(done.status), "labels": done.labels}), flush=True)
    # Every field also by default (the library asks for all it knows).
    everything = c.get_torrent(tid)
    print(json.dumps({"step": "all-fields", "name": everything.name, "progress": everything.progress}), flush=True)

    c.change_torrent(tid, labels=["tv", "hd"])
    labels = c.get_torrent(tid, arguments=["labels"]).labels
    print(json.dumps({"step": "labels", "labels": labels}), flush=True)

    # Queue moves, a reannounce, a tracker added (all accepted; one torrent: position 0 stays).
    c.queue_bottom(tid)
    c.queue_top(tid)
    c.reannounce_torrent(tid)
    c.change_torrent(tid, tracker_add=["http://127.0.0.1:9/announce"])
    t = c.get_torrent(tid, arguments=["queuePosition", "trackers", "doneDate"])
    print(json.dumps({"step": "queue", "position": t.queue_position,
                      "trackers": [x.announce for x in t.trackers],
                      "done_date": t.fields["doneDate"]}), flush=True)

    stats = c.session_stats()
    print(json.dumps({"step": "stats", "torrents": stats.torrent_count}), flush=True)

    c.move_torrent_data(tid, move_dir)
    moved = wait("moved and seeding again", lambda: (lambda t: t if t.download_dir == move_dir and
                 t.status == "seeding" else None)(c.get_torrent(tid, arguments=["downloadDir", "status"])))
    print(json.dumps({"step": "moved", "download_dir": moved.download_dir}), flush=True)

    renamed = [c.rename_torrent_path(tid, "show/e2.mkv", "e2-renamed.mkv"),
               c.rename_torrent_path(tid, "show", "Show")]
    back = wait("renamed and seeding again", lambda: (lambda t: t if t.status == "seeding" else None)(
        c.get_torrent(tid, arguments=["name", "files", "fileStats", "priorities", "wanted", "status"])))
    print(json.dumps({"step": "renamed", "answers": renamed, "name": back.name,
                      "files": [f.name for f in back.get_files()]}), flush=True)

    c.remove_torrent(tid, delete_data=True)
    left = [t.id for t in c.get_torrents(arguments=["id"])]
    print(json.dumps({"step": "removed", "left": left}), flush=True)


if __name__ == "__main__":
    main()
