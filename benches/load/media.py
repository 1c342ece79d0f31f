"""The media repository under load, against the release binary of this homeserver:

1. peak memory during a 1 GiB upload: the server's resident memory idle (VmRSS), then sampled
   every 20 ms during the upload, and its high-water mark (VmHWM) after it; the target is a
   peak under 64 MB above idle;
2. download throughput against reading the same file from disk, in the same run, alternating
   (the same client code reads both: 1 MiB `readinto`s; the page cache is warm for both);
   the target is at least 80% of the disk's rate. When curl is installed, the same again with
   curl as the client of both (`http://` and `file://`, into /dev/null), so that the client's
   own cost (Python's) can be told from the server's. With `--cold` (root only), the kernel's
   page cache is dropped before every read, so that both read the disk itself.

    python3 benches/load/media.py [--binary target/release/homeserver] [--mib 1024] [--rounds 3]

Prints one JSON object. Build the binary first: `cargo build --release -p homeserver-bin`."""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from compare import free_port, start, stop

CHUNK = 1 << 20


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {key} for {pid}")


def call(port, method, path, body=None, token=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, (json.loads(data) if data else None)


def register(port):
    body = {"username": "media", "password": "media-password-1"}
    status, answer = call(port, "POST", "/_matrix/client/v3/register", body)
    if status == 401:
        body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
        status, answer = call(port, "POST", "/_matrix/client/v3/register", body)
    if status != 200:
        raise SystemExit(f"register: {status} {answer}")
    return answer["access_token"]


def upload(port, token, size, pid):
    """Uploads `size` bytes, streamed; answers (media id, seconds, peak VmRSS sampled)."""
    block = bytes((i * 7) % 251 for i in range(CHUNK))
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def body():
        left = size
        while left > 0:
            n = min(left, CHUNK)
            yield block[:n]
            left -= n

    began = time.perf_counter()
    status, answer = call(port, "POST", "/_matrix/media/v3/upload?filename=big.bin", body(), token,
                          {"Content-Type": "application/octet-stream",
                           "Content-Length": str(size)})
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    if status != 200:
        raise SystemExit(f"upload: {status} {answer}")
    return answer["content_uri"].rsplit("/", 1)[1], seconds, peak[0]


def read_all(readinto):
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while True:
        n = readinto(view)
        if not n:
            return total
        total += n


def download(port, token, media_id):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    began = time.perf_counter()
    connection.request("GET", f"/_matrix/client/v1/media/download/localhost/{media_id}",
                       headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    if response.status != 200:
        raise SystemExit(f"download: {response.status}")
    total = read_all(response.readinto)
    seconds = time.perf_counter() - began
    connection.close()
    return total, seconds


def drop_caches(cold):
    """Empties the page cache (with `--cold`), so that the next read comes from the disk."""
    if cold:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def curl_seconds(url, token=None):
    """Seconds curl takes to read `url` into /dev/null (its own measure of the transfer)."""
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    seconds, size = subprocess.run(command, check=True, capture_output=True,
                                   text=True).stdout.split()
    return int(size), float(seconds)


def from_disk(path):
    began = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        total = read_all(f.readinto)
    return total, time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "..", "target"))
    parser.add_argument("--binary", default=os.path.join(target, "release", "homeserver"))
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every read (needs root)")
    args = parser.parse_args()
    size = args.mib << 20

    work = tempfile.mkdtemp(prefix="media-bench-")
    port = free_port()
    config = os.path.join(work, "homeserver.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{work}/data"\n'
                '[registration]\nmode = "open"\nenable_registration_without_verification = true\n[rate_limits]\nenabled = false\n'
                f'[limits]\nmax_media_bytes = {size}\nmedia_quota_bytes = 0\n')
    log = open(os.path.join(work, "log"), "w")
    process, _ = start([args.binary, "serve", "--config", config], f"http://127.0.0.1:{port}",
                       log=log)
    try:
        token = register(port)
        time.sleep(1)
        idle = status_kib(process.pid, "VmRSS")
        hwm_before = status_kib(process.pid, "VmHWM")
        media_id, upload_seconds, sampled = upload(port, token, size, process.pid)
        hwm_after = status_kib(process.pid, "VmHWM")
        content = os.path.join(work, "data", "media", "content")
        files = [n for n in os.listdir(content) if "." not in n]
        path = os.path.join(content, files[0])
        rounds = []
        for _ in range(args.rounds):
            drop_caches(args.cold)
            disk_bytes, disk_seconds = from_disk(path)
            drop_caches(args.cold)
            http_bytes, http_seconds = download(port, token, media_id)
            assert disk_bytes == http_bytes == size, (disk_bytes, http_bytes, size)
            round_ = {
                "disk_mib_s": round(size / disk_seconds / (1 << 20)),
                "download_mib_s": round(size / http_seconds / (1 << 20)),
                "ratio": round(disk_seconds / http_seconds, 3),
            }
            if shutil.which("curl"):
                drop_caches(args.cold)
                disk_bytes, disk_seconds = curl_seconds(f"file://{path}")
                url = f"http://127.0.0.1:{port}/_matrix/client/v1/media/download/localhost/{media_id}"
                drop_caches(args.cold)
                http_bytes, http_seconds = curl_seconds(url, token)
                assert disk_bytes == http_bytes == size, (disk_bytes, http_bytes, size)
                round_.update({
                    "curl_disk_mib_s": round(size / disk_seconds / (1 << 20)),
                    "curl_download_mib_s": round(size / http_seconds / (1 << 20)),
                    "curl_ratio": round(disk_seconds / http_seconds, 3),
                })
            rounds.append(round_)
        hwm_end = status_kib(process.pid, "VmHWM")
    finally:
        stop(process)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    ratios = sorted(r["ratio"] for r in rounds)
    curl_ratios = sorted(r["curl_ratio"] for r in rounds if "curl_ratio" in r)
    print(json.dumps({
        "upload_mib": args.mib,
        "page_cache": "dropped before every read" if args.cold else "warm",
        "upload_seconds": round(upload_seconds, 2),
        "idle_rss_mib": round(idle / 1024, 1),
        "hwm_before_upload_mib": round(hwm_before / 1024, 1),
        "peak_rss_sampled_during_upload_mib": round(sampled / 1024, 1),
        "hwm_after_upload_mib": round(hwm_after / 1024, 1),
        "upload_peak_above_idle_mib": round((max(hwm_after, sampled) - idle) / 1024, 1),
        "hwm_after_downloads_mib": round(hwm_end / 1024, 1),
        "rounds": rounds,
        "median_download_over_disk": ratios[len(ratios) // 2],
        "median_download_over_disk_curl": curl_ratios[len(curl_ratios) // 2] if curl_ratios
        else None,
    }, indent=1))


if __name__ == "__main__":
    main()
