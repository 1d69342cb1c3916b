"""Downloads for users with internet access; nothing in the default pipeline or the tests calls them.

``download_voc(root, "2012")`` returns ``root/VOCdevkit/VOC2012``. It fetches and extracts the official
archive only when that directory is not already complete, so pointing it at a local copy (extracted by
hand: the archive's own layout) costs nothing and never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

# year -> (url, md5, directory the archive creates under root, a file that proves it was extracted)
VOC_ARCHIVES = {
    "2012": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
             "6cd6e144f989b92b3379bac3b3de84fd", "VOCdevkit/VOC2012", "ImageSets/Main/trainval.txt"),
    "2011": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
             "6c3384ef61512963050cb5d687e5bf1e", "TrainVal/VOCdevkit/VOC2011", "ImageSets/Main/trainval.txt"),
    "2010": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
             "da459979d0c395079b5c75ee67908abb", "VOCdevkit/VOC2010", "ImageSets/Main/trainval.txt"),
    "2009": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2009/VOCtrainval_11-May-2009.tar",
             "a3e00b113cfcfebf17e343f59da3caa1", "VOCdevkit/VOC2009", "ImageSets/Main/trainval.txt"),
    "2008": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2008/VOCtrainval_14-Jul-2008.tar",
             "2629fa636546599198acfcfbfcf1904a", "VOCdevkit/VOC2008", "ImageSets/Main/trainval.txt"),
    "2007": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
             "c52e279531787c972589f7e41ab4ae64", "VOCdevkit/VOC2007", "ImageSets/Main/trainval.txt"),
    "2007-test": ("https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
                  "b6e924de25625d8de591ea690078ad9f", "VOCdevkit/VOC2007", "ImageSets/Main/test.txt"),
}


def download_voc(root: Path, year: str) -> Path:
    """The ``VOCdevkit/VOC<year>`` directory under ``root``, downloading and extracting the official tar if absent.

    year: "2007" (trainval), "2007-test", "2008" ... "2012". The archive is checked against its md5, kept
    in ``root`` (delete it to save space), and extracted into a scratch directory that is merged into
    ``root`` only when complete, so an interrupted run never leaves a directory that looks finished.
    """
    if year not in VOC_ARCHIVES:
        raise ValueError(f"unknown VOC year {year!r}; choose one of {sorted(VOC_ARCHIVES)}")
    url, md5, base_dir, marker = VOC_ARCHIVES[year]
    root = Path(root)
    target = root / base_dir
    if (target / marker).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / url.rsplit("/", 1)[-1]
    if not archive.is_file() or file_md5(archive) != md5:
        fetch(url, archive)
        if file_md5(archive) != md5:
            archive.unlink()
            raise OSError(f"{url} did not match its md5 {md5}; the download was removed, try again")
    scratch = root / f".extract-{archive.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    extract_tar(archive, scratch)
    merge_tree(scratch, root)
    if not (target / marker).is_file():
        raise OSError(f"{archive} did not contain {base_dir}/{marker}; is it the VOC {year} archive?")
    return target


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, path: Path, chunk: int = 1 << 20) -> Path:
    """Stream ``url`` to ``path`` (written as ``path.part`` and renamed when complete), with a progress bar."""
    from lib.storage import progress_bar as tqdm

    partial = path.with_name(path.name + ".part")
    with urllib.request.urlopen(url) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
            for block in iter(lambda: response.read(chunk), b""):
                out.write(block)
                bar.update(len(block))
    os.replace(partial, path)
    return path


def extract_tar(archive: Path, destination: Path) -> None:
    """Extract with the "data" filter where Python has it (no absolute paths, links out of the tree, devices)."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            for member in tar.getmembers():
                resolved = (destination / member.name).resolve()
                if not resolved.is_relative_to(destination.resolve()) or member.issym() or member.islnk():
                    raise OSError(f"refusing to extract {member.name!r} from {archive}")
            tar.extractall(destination)


def merge_tree(source: Path, destination: Path) -> None:
    """Move every file of ``source`` to the same place under ``destination`` (renames, no copies); drop ``source``."""
    for directory, _, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        (destination / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(directory) / name, destination / relative / name)
    shutil.rmtree(source)
