# The image readers: DICOM through DCMTK, NIfTI and others through ITK.
# Owned by the readers work (issue 4); sources live in lib/imaging/.
file(GLOB_RECURSE MM_IMAGING_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/imaging/*.cpp)
if(MM_IMAGING_SOURCES)
  find_package(DCMTK QUIET)
  find_package(ITK QUIET)
  if(DCMTK_FOUND AND ITK_FOUND)
    add_library(medmamba_imaging STATIC ${MM_IMAGING_SOURCES})
    target_link_libraries(medmamba_imaging PUBLIC medmamba)
    target_compile_definitions(medmamba_imaging PUBLIC MM_HAVE_IMAGING=1)
  else()
    message(STATUS "DCMTK or ITK not found: building without the image readers")
  endif()
endif()
