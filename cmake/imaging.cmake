# The image readers: DICOM through DCMTK (OpenJPEG for JPEG 2000), NIfTI ours,
# PNG/JPEG/TIFF through libpng/libjpeg/libtiff, BMP through ITK. Owned by the readers
# work (issue 4); sources live in lib/imaging/. Only the ITK modules the readers
# use are requested, which keeps configure quick and the link small.
file(GLOB_RECURSE MM_IMAGING_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/imaging/*.cpp)
if(MM_IMAGING_SOURCES)
  find_package(DCMTK QUIET)
  find_package(OpenJPEG QUIET)
  find_package(charls QUIET)  # JPEG-LS (CharLS 2; DCMTK's own fork rejects valid streams)
  find_package(ITK QUIET COMPONENTS ITKIOImageBase ITKIOBMP)
  # PNG, JPEG and TIFF are read with libpng, libjpeg and libtiff (4.5: TIFFOpenExt)
  # directly: lib/imaging/png_reader.cpp, jpeg_reader.cpp and tiff_reader.cpp say why.
  find_package(PNG QUIET)
  find_package(JPEG QUIET)
  find_package(TIFF 4.5 QUIET)
  if(DCMTK_FOUND AND OpenJPEG_FOUND AND charls_FOUND AND ITK_FOUND AND PNG_FOUND AND JPEG_FOUND AND TIFF_FOUND)
    add_library(medmamba_imaging STATIC ${MM_IMAGING_SOURCES})
    target_compile_options(medmamba_imaging PRIVATE ${MM_CPU_FLAGS} -Wall -Wextra)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # gcc's scalar-to-vector pass (with SSE4.1 and up, so -march=native) moves the JPEG-LS
      # decoder's per-sample min/max into vector registers: a round trip between register files
      # on every sample's dependency chain, 6% of a CT slice's decoding time.
      set_source_files_properties(${PROJECT_SOURCE_DIR}/lib/imaging/dicom_jpegls_decoder.cpp
                                  PROPERTIES COMPILE_OPTIONS -mno-stv)
    endif()
    # ITK headers are heavy: only lib/imaging/bmp_reader.cpp includes them.
    target_include_directories(medmamba_imaging SYSTEM PRIVATE ${ITK_INCLUDE_DIRS} ${OPENJPEG_INCLUDE_DIRS})
    target_link_libraries(medmamba_imaging
      PUBLIC medmamba
      PRIVATE DCMTK::dcmdata DCMTK::dcmimage DCMTK::dcmjpeg charls ${OPENJPEG_LIBRARIES} ${ITK_LIBRARIES}
              PNG::PNG JPEG::JPEG TIFF::TIFF ZLIB::ZLIB)
    # Tests find the shared data set (../shared/data beside the repository) through this.
    target_compile_definitions(medmamba_imaging PUBLIC
      MM_HAVE_IMAGING=1
      MM_SHARED_DATA_DIR="${PROJECT_SOURCE_DIR}/../shared/data")
    # mm-serve's DICOM node (lib/serve): the readers plus DCMTK's network and SR modules.
    file(GLOB MM_SERVE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/serve/*.cpp)
    if(MM_SERVE_SOURCES)
      add_library(medmamba_serve STATIC ${MM_SERVE_SOURCES})
      target_compile_options(medmamba_serve PRIVATE ${MM_CPU_FLAGS} -Wall -Wextra)
      target_link_libraries(medmamba_serve PUBLIC medmamba_imaging DCMTK::dcmnet DCMTK::dcmsr DCMTK::dcmdata)
      target_compile_definitions(medmamba_serve PUBLIC MM_HAVE_SERVE=1)
    endif()
  else()
    message(STATUS "DCMTK, OpenJPEG, CharLS, ITK, libpng, libjpeg or libtiff 4.5 not found: building without the image readers")
  endif()
endif()
