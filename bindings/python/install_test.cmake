# ctest python.install: stages `cmake --install` of the build under a DESTDIR and
# checks that the chosen interpreter would import the installed esg: the install
# directory is on its default sys.path, and the staged package imports and works
# from outside the build tree (-I: no PYTHONPATH, no user site).
# Variables: BUILD, STAGE, PY, DIR (absolute install directory of the package).
file(REMOVE_RECURSE ${STAGE})
execute_process(COMMAND ${CMAKE_COMMAND} -E env DESTDIR=${STAGE} ${CMAKE_COMMAND} --install ${BUILD}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()
execute_process(
  COMMAND ${PY} -I -c "
import sys
target, staged = sys.argv[1], sys.argv[2]
if target not in sys.path:
    sys.exit('%s is not on %s sys.path %s' % (target, sys.executable, sys.path))
sys.path.insert(0, staged)
import esg
assert esg.__file__.startswith(staged), esg.__file__
with esg.Store(':memory:') as s:
    c = s.claim('k')
    s.complete('k', c.token, b'r')
    assert s.claim('k').result == b'r'
print('installed esg', esg.version, 'imports from', target)
" ${DIR} ${STAGE}${DIR}
  WORKING_DIRECTORY ${STAGE} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed package does not import")
endif()
