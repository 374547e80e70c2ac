"""The build of `pip install .` (pyproject.toml): the extension esg._esg comes from CMake.

CMake configures this source tree for the interpreter running the build
(Python3_EXECUTABLE = sys.executable), builds only the target esg_python (libesg linked
in statically, so `import esg` needs no LD_LIBRARY_PATH) and the built module is copied
where setuptools expects it. Needs cmake, a C compiler and libesg's -dev packages
(the README's `make deps`). ESG_CMAKE_ARGS adds configure arguments.
"""
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).parent.resolve()


def version():
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(libesg VERSION ([0-9.]+)", text).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        out = pathlib.Path(self.get_ext_fullpath(ext.name)).resolve()
        tree = pathlib.Path(self.build_temp).resolve() / "cmake"
        configure = ["cmake", "-S", str(ROOT), "-B", str(tree), "-DCMAKE_BUILD_TYPE=Release",
                     "-DPython3_EXECUTABLE=" + sys.executable, "-DESG_BUILD_TESTS=OFF",
                     "-DESG_BUILD_BENCH=OFF", "-DESG_ENABLE_LUA=OFF"]
        configure += shlex.split(os.environ.get("ESG_CMAKE_ARGS", ""))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", str(tree), "--target", "esg_python",
                               "-j", str(os.cpu_count() or 1)])
        built = sorted((tree / "bindings" / "python" / "pkg" / "esg").glob("_esg*.so"))
        if not built:
            raise RuntimeError("the CMake build made no esg/_esg*.so under " + str(tree))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], out)


# setuptools' own work goes under build/pip, out of the source folders and of make's build/.
WORK = ROOT / "build" / "pip"
WORK.mkdir(parents=True, exist_ok=True)
setup(version=version(), ext_modules=[Extension("esg._esg", sources=[])], cmdclass={"build_ext": CMakeBuild},
      options={"build": {"build_base": str(WORK)}, "egg_info": {"egg_base": str(WORK)}})
