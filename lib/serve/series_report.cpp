#include "serve/series_report.h"

#include <cstdio>
#include <set>

#include "core/error.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "predict/record_writer.h"
#include "serve/dicom_output.h"

namespace mm::serve {

namespace {

// Our own codes (coding scheme designators starting "99" are private, PS3.16 8.2).
const char* const kScheme = "99MEDMAMBA";
DSRCodedEntryValue code(const char* value, const char* meaning) { return DSRCodedEntryValue(value, kScheme, meaning); }

void check(const OFCondition& c, const std::string& what) { check_dicom(c, "series report: " + what); }

struct Member {
  std::string sop_class, sop_uid;
};

Member header_of(const std::string& path, DcmFileFormat& file) {
  check(file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 256, ERM_autoDetect), path);
  OFString sop_class, sop_uid;
  file.getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class);
  file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sop_uid);
  return {sop_class.c_str(), sop_uid.c_str()};
}

void add_text(DSRDocumentTree& tree, const char* value, const char* meaning, const std::string& text) {
  check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Text, code(value, meaning)), meaning);
  check(tree.getCurrentContentItem().setStringValue(text.c_str()), meaning);
}

void add_probability(DSRDocumentTree& tree, size_t class_index, const std::string& class_name, double value) {
  const std::string meaning = "Probability of " + class_name;
  check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Num) > 0 ? EC_Normal : SR_EC_InvalidDocumentTree, meaning);
  check(tree.getCurrentContentItem().setConceptName(DSRCodedEntryValue(
            ("MM-P" + std::to_string(class_index)).c_str(), kScheme, meaning.substr(0, 64).c_str())),
        meaning);
  check(tree.getCurrentContentItem().setNumericValue(
            DSRNumericMeasurementValue(format_number(value).c_str(), DSRCodedEntryValue("1", "UCUM", "no units"))),
        meaning);
}

}  // namespace

std::string write_series_report(const SeriesResult& series, const ReportModel& model, const std::string& folder) {
  MM_CHECK(!series.members.empty(), "series report: no instances");
  const Prediction& p = series.aggregate;
  DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
  check(doc.createNewSeriesInStudy(p.study_uid.c_str()), "study");
  check(doc.setSeriesDescription("MedMamba classification - not for clinical use"), "series description");
  check(doc.setManufacturer("medmamba-cpp mm-serve"), "manufacturer");

  DSRDocumentTree& tree = doc.getTree();
  check(tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) > 0 ? EC_Normal : SR_EC_InvalidDocumentTree, "root");
  check(tree.getCurrentContentItem().setConceptName(code("MM-RESULT", "MedMamba series classification")), "root");
  check(tree.addChildContentItem(DSRTypes::RT_contains, DSRTypes::VT_Text,
                                 code("MM-NOTE", "Note")),
        "note");
  check(tree.getCurrentContentItem().setStringValue(
            "Research software output. Not for clinical use: not a medical device, not validated for diagnosis."),
        "note");
  add_text(tree, "MM-MODEL", "Model", model.name);
  const bool ok = p.status == PredictionStatus::Ok && p.class_index >= 0;
  add_text(tree, "MM-CLASS", "Predicted class",
           ok ? model.class_names.at(size_t(p.class_index)) : std::string("none (no image classified)"));
  for (size_t c = 0; c < p.probabilities.size() && c < model.class_names.size(); ++c)
    add_probability(tree, c, model.class_names[c], p.probabilities[c]);
  check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Num, code("MM-IMAGES", "Images classified")),
        "images");
  check(tree.getCurrentContentItem().setNumericValue(DSRNumericMeasurementValue(
            std::to_string(p.images).c_str(), DSRCodedEntryValue("{images}", "UCUM", "images"))),
        "images");

  DcmFileFormat first;
  std::set<std::string> seen;
  for (size_t i = 0; i < series.members.size(); ++i) {
    DcmFileFormat file;
    const Member m = header_of(series.members[i], i == 0 ? first : file);
    if (m.sop_uid.empty() || !seen.insert(m.sop_uid).second) continue;
    check(tree.addContentItem(DSRTypes::RT_contains, DSRTypes::VT_Image) > 0 ? EC_Normal : SR_EC_InvalidDocumentTree, "image");
    check(tree.getCurrentContentItem().setImageReference(DSRImageReferenceValue(m.sop_class.c_str(), m.sop_uid.c_str())),
          series.members[i]);
    check(doc.getCurrentRequestedProcedureEvidence().addItem(p.study_uid.c_str(), p.series_uid.c_str(),
                                                             m.sop_class.c_str(), m.sop_uid.c_str()),
          series.members[i]);
  }

  DcmFileFormat out;
  DcmDataset& ds = *out.getDataset();
  check(doc.write(ds), "writing the document");
  copy_patient_and_study(*first.getDataset(), ds, /*with_study_uid=*/false);
  return save_durably(out, folder);
}

}  // namespace mm::serve
