# Installing and packaging (issue 13): the tools in bin/, the shipped models, DCMTK's data
# dictionary and the docs in share/medmamba/, man pages in share/man/man1/; CPack's .deb.
# The tools find their data relative to their own location (lib/core/install_paths.h,
# lib/model/default_model.h), so this layout is what they expect under any prefix.
include(GNUInstallDirs)
set(MM_INSTALL_SHARE_DIR ${CMAKE_INSTALL_DATADIR}/medmamba)
set(MM_TOOLS mm-predict mm-eval mm-train mm-convert mm-bench mm-serve)
set(MM_INSTALLED_TOOLS "")
# The OpenMP build of OpenBLAS is found through the build's RUNPATH (CMakeLists.txt says why
# it matters); installed tools keep that path, or they would load whichever variant the
# libopenblas.so.0 alternative names (Debian installs the pthread one by default).
# A CUDA build keeps the toolkit's library folder too (/usr/local/cuda is no system path).
set(MM_INSTALL_RPATH "")
if(MM_OPENBLAS_OPENMP)
  get_filename_component(MM_OPENBLAS_OPENMP_DIR ${MM_OPENBLAS_OPENMP} DIRECTORY)
  list(APPEND MM_INSTALL_RPATH ${MM_OPENBLAS_OPENMP_DIR})
endif()
if(MM_HAVE_CUDA AND CUDAToolkit_LIBRARY_DIR)
  list(APPEND MM_INSTALL_RPATH ${CUDAToolkit_LIBRARY_DIR})
endif()
foreach(tool ${MM_TOOLS})
  if(TARGET ${tool})
    set_target_properties(${tool} PROPERTIES INSTALL_RPATH "${MM_INSTALL_RPATH}")
    install(TARGETS ${tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    list(APPEND MM_INSTALLED_TOOLS ${tool})
  endif()
endforeach()

file(GLOB MM_SHIPPED_MODELS ${PROJECT_SOURCE_DIR}/share/models/*.safetensors ${PROJECT_SOURCE_DIR}/share/models/*.md)
install(FILES ${MM_SHIPPED_MODELS} DESTINATION ${MM_INSTALL_SHARE_DIR}/models)
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${MM_INSTALL_SHARE_DIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${MM_INSTALL_SHARE_DIR}/docs FILES_MATCHING PATTERN "*.md")

# DCMTK's data dictionary, the one of the DCMTK we link (its osconfig.h names it): on a machine
# without it, implicit-VR DICOM cannot be read (lib/imaging/dicom_dictionary.h).
if(TARGET medmamba_imaging)
  find_file(MM_DCMTK_OSCONFIG dcmtk/config/osconfig.h HINTS ${DCMTK_INCLUDE_DIRS})
  if(MM_DCMTK_OSCONFIG)
    file(STRINGS ${MM_DCMTK_OSCONFIG} dict_line REGEX "^#define DCM_DICT_DEFAULT_PATH ")
    string(REGEX MATCH "[^\":]*/dicom\\.dic" MM_DCMTK_DICTIONARY "${dict_line}")
  endif()
  if(NOT MM_DCMTK_DICTIONARY OR NOT EXISTS "${MM_DCMTK_DICTIONARY}")
    file(GLOB MM_DCMTK_DICTIONARY /usr/share/libdcmtk*/dicom.dic /usr/local/share/dcmtk*/dicom.dic)
    list(SORT MM_DCMTK_DICTIONARY)
    list(POP_BACK MM_DCMTK_DICTIONARY MM_DCMTK_DICTIONARY)
  endif()
  if(MM_DCMTK_DICTIONARY)
    message(STATUS "DCMTK data dictionary, installed with the tools: ${MM_DCMTK_DICTIONARY}")
    install(FILES ${MM_DCMTK_DICTIONARY} DESTINATION ${MM_INSTALL_SHARE_DIR})
  else()
    message(WARNING "DCMTK's dicom.dic not found: the installed tools rely on the target machine's")
  endif()
endif()

# A man page per tool, from its --help (cmake/help_to_man.py; help2man is not in setup.sh).
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  set(MM_MAN_PAGES "")
  foreach(tool ${MM_INSTALLED_TOOLS})
    set(page ${CMAKE_BINARY_DIR}/man/${tool}.1)
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/cmake/help_to_man.py $<TARGET_FILE:${tool}> ${page}
              ${PROJECT_VERSION}
      DEPENDS ${tool} ${PROJECT_SOURCE_DIR}/cmake/help_to_man.py
      COMMENT "Man page ${tool}.1 from ${tool} --help" VERBATIM)
    list(APPEND MM_MAN_PAGES ${page})
  endforeach()
  add_custom_target(man-pages ALL DEPENDS ${MM_MAN_PAGES})
  install(FILES ${MM_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
else()
  message(STATUS "No Python 3: no man pages")
endif()

# The .deb: cpack -G DEB in the build folder. Its Depends come from dpkg-shlibdeps on the
# installed executables (the Debian packages of the shared libraries they load).
# For other machines configure with -DMM_NATIVE=OFF: -march=native code may not run there.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME medmamba-tools)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "MedMamba medical image classifier: command-line tools and models")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "mm-predict classifies DICOM, NIfTI and picture files with a MedMamba model;
mm-eval scores a model on labelled data; mm-train trains one; mm-convert
converts PyTorch checkpoints; mm-bench measures speed; mm-serve is a DICOM
storage node that classifies what it receives. Ships the default brain MRI
model. Not for clinical use.")
set(MM_PACKAGE_MAINTAINER "MedMamba C++ maintainers <maintainers@users.noreply.r-seed-de20aa0a.example>"
    CACHE STRING "Maintainer field of the .deb")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${MM_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libopenblas0's shlibs name the package, not the variant: ask for the one the RUNPATH above expects.
if(MM_OPENBLAS_OPENMP_DIR)
  execute_process(COMMAND dpkg-query -S ${MM_OPENBLAS_OPENMP_DIR}/libopenblas.so.0 OUTPUT_VARIABLE blas_owner ERROR_QUIET)
  string(REGEX MATCH "^[^:,]+" MM_OPENBLAS_OPENMP_PACKAGE "${blas_owner}")
  if(MM_OPENBLAS_OPENMP_PACKAGE)
    set(CPACK_DEBIAN_PACKAGE_DEPENDS ${MM_OPENBLAS_OPENMP_PACKAGE})
  endif()
endif()
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
include(CPack)

if(MM_BUILD_TESTS)
  # Every option in each tool's --help appears on its page in docs/.
  set(MM_TOOL_FILES "")
  foreach(tool ${MM_INSTALLED_TOOLS})
    list(APPEND MM_TOOL_FILES $<TARGET_FILE:${tool}>)
  endforeach()
  add_test(NAME docs-options COMMAND ${PROJECT_SOURCE_DIR}/test/docs_options_test.sh ${PROJECT_SOURCE_DIR}/docs
                                     ${MM_TOOL_FILES})
endif()

if(MM_BUILD_TESTS AND TARGET medmamba_imaging)
  # mm-predict on an implicit-VR DICOM file with DCMTK's data dictionary made unavailable.
  add_test(NAME dicom-dictionary
    COMMAND ${PROJECT_SOURCE_DIR}/test/dicom_dictionary_test.sh $<TARGET_FILE:mm-predict>
            ${PROJECT_SOURCE_DIR}/share/models/brain-mri-96.safetensors ${PROJECT_SOURCE_DIR}/../shared/data)
  # cpack's .deb extracted into a scratch root; its tools run from there (skipped without cpack/dpkg-deb).
  add_test(NAME package-install
    COMMAND ${PROJECT_SOURCE_DIR}/test/package_install_test.sh ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR}
            ${PROJECT_SOURCE_DIR}/../shared/data)
  set_tests_properties(package-install PROPERTIES SKIP_RETURN_CODE 77)
endif()
