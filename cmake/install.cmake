# Installing and packaging (issue 13): the tools in bin/, the shipped models, DCMTK's data
# dictionary and the docs in share/medmamba/, man pages in share/man/man1/; CPack's .deb.
# The tools find their data relative to their own location (lib/core/install_paths.h),
# so the layout below is what they expect wherever the prefix is.

if(MM_BUILD_TESTS AND TARGET medmamba_imaging)
  # mm-predict on an implicit-VR DICOM file with DCMTK's data dictionary made unavailable.
  add_test(NAME dicom-dictionary
    COMMAND ${PROJECT_SOURCE_DIR}/test/dicom_dictionary_test.sh $<TARGET_FILE:mm-predict>
            ${PROJECT_SOURCE_DIR}/share/models/brain-mri-96.safetensors ${PROJECT_SOURCE_DIR}/../shared/data)
endif()
