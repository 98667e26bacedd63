"""Load a model and its texture from an mf archive into a running Panda3D, the way a game does.

    python panda3d_load.py game.mf models/crate.egg      # any archive, any model in it
    python panda3d_load.py --demo game.mf                # first write a demo archive (a textured quad)

The archive's entries are put into Panda3D's virtual file system under /mf (a ramdisk mount filled
through mfarchive), so the loader finds the model by path and the model finds its textures by their
relative paths, exactly as with loose files. A texture can also be decoded straight from the archive's
bytes (``texture_from_archive``), which is what a game streaming assets on demand would do. Prints the
loaded model's and texture's properties as JSON (the test asserts them). Runs without a display
(window-type none).
"""

from __future__ import annotations

import json
import sys

from panda3d.core import (
    Filename,
    PNMImage,
    StringStream,
    Texture,
    VirtualFileMountRamdisk,
    VirtualFileSystem,
    loadPrcFileData,
)

import mfarchive

MOUNT_POINT = "/mf"


def mount(archive: mfarchive.Archive, mount_point: str = MOUNT_POINT) -> None:
    """Makes every entry of `archive` a file under `mount_point` in Panda3D's virtual file system."""
    vfs = VirtualFileSystem.getGlobalPtr()
    vfs.mount(VirtualFileMountRamdisk(), mount_point, 0)
    for entry in archive:
        name = Filename(f"{mount_point}/{entry.path}")
        vfs.makeDirectoryFull(name.getDirname())
        if not vfs.writeFile(name, archive.read(entry), False):
            raise OSError(f"cannot write {name} into the virtual file system")


def texture_from_archive(archive: mfarchive.Archive, path: str) -> Texture:
    """Decodes an image entry straight from the archive's bytes (no file system involved)."""
    image = PNMImage()
    if not image.read(StringStream(archive.read(path)), path):
        raise ValueError(f"{archive.path}: entry {path!r} is not an image Panda3D reads")
    texture = Texture(path)
    texture.load(image)
    return texture


def write_demo(out: str) -> None:
    """A demo archive: a textured quad (egg) and a 64x32 PNG texture, red left half, blue right."""
    image = PNMImage(64, 32, 3)
    image.fill(0, 0, 1)
    for x in range(32):
        for y in range(32):
            image.setXel(x, y, 1, 0, 0)
    png = StringStream()
    if not image.write(png, "crate.png"):
        raise RuntimeError("Panda3D cannot write PNG")
    egg = b"""<CoordinateSystem> { Z-up }
<Texture> crate { "../textures/crate.png" }
<VertexPool> quad {
  <Vertex> 0 { -1 0 -1 <UV> { 0 0 } }
  <Vertex> 1 {  1 0 -1 <UV> { 1 0 } }
  <Vertex> 2 {  1 0  1 <UV> { 1 1 } }
  <Vertex> 3 { -1 0  1 <UV> { 0 1 } }
}
<Group> crate {
  <Polygon> { <TRef> { crate } <VertexRef> { 0 1 2 3 <Ref> { quad } } }
}
"""
    with mfarchive.Writer(out) as writer:
        writer.add("models/crate.egg", egg)
        writer.add("textures/crate.png", png.getData())


def main(argv: list[str]) -> int:
    if argv[:1] == ["--demo"]:
        write_demo(argv[1])
        argv = [argv[1], "models/crate.egg"]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    archive_path, model_path = argv
    loadPrcFileData("", "window-type none\naudio-library-name null\nmodel-cache-dir\n")
    from direct.showbase.ShowBase import ShowBase

    base = ShowBase()
    with mfarchive.open(archive_path) as archive:
        mount(archive)
        model = base.loader.loadModel(f"{MOUNT_POINT}/{model_path}")
        model.reparentTo(base.render)
        texture = model.findTexture("*")
        direct = texture_from_archive(archive, "textures/crate.png") if "textures/crate.png" in archive else None
    geoms = [path.node() for path in model.findAllMatches("**/+GeomNode")]
    vertices = sum(node.getGeom(i).getVertexData().getNumRows() for node in geoms for i in range(node.getNumGeoms()))
    report = {
        "model": model.getName(),
        "geom_nodes": len(geoms),
        "vertices": vertices,
        "bounds": [list(point) for point in model.getTightBounds()],
        "texture": None
        if texture is None
        else {"name": texture.getName(), "size": [texture.getXSize(), texture.getYSize()]},
    }
    if direct is not None:
        image = PNMImage()
        direct.store(image)
        report["direct_texture"] = {
            "size": [direct.getXSize(), direct.getYSize()],
            "left": list(image.getXel(5, 5)),
            "right": list(image.getXel(60, 5)),
        }
    print(json.dumps(report))
    base.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
