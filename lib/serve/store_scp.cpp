#include "serve/store_scp.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/diutil.h"
#include "imaging/dicom_attributes.h"
#include "serve/durable_files.h"
#include "serve/serve_log.h"

namespace mm::serve {

namespace {

constexpr unsigned short kStatusSuccess = 0x0000;
constexpr unsigned short kStatusSopClassNotSupported = 0x0122;
constexpr unsigned short kStatusDatasetMismatch = 0xA900;
constexpr unsigned short kStatusCannotUnderstand = 0xC000;
constexpr unsigned short kStatusOutOfResources = 0xA700;

// The sender's encoding is kept: a context proposing a compressed syntax gets
// it (the readers decode every one listed), so no SCU has to transcode (DCMTK's
// storescu cannot decode RLE, for one). HTJ2K and deflated image frames are
// newer than DCMTK 3.6.7's tables but travel as explicit little endian.
const char* const kTransferSyntaxes[] = {
    UID_JPEG2000LosslessOnlyTransferSyntax, UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax, UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGLSLossyTransferSyntax, UID_JPEGProcess14SV1TransferSyntax, UID_JPEGProcess14TransferSyntax,
    UID_JPEGProcess1TransferSyntax, UID_JPEGProcess2_4TransferSyntax, UID_JPEGProcess6_8TransferSyntax,
    UID_JPEGProcess10_12TransferSyntax, UID_RLELosslessTransferSyntax,
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  // HTJ2K
    "1.2.840.10008.1.2.8.1",                                                          // deflated image frames
    UID_DeflatedExplicitVRLittleEndianTransferSyntax, UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax,
};

std::string trimmed(const OFString& s) {
  std::string t = s.c_str();
  while (!t.empty() && t.back() == ' ') t.pop_back();
  return t;
}

// Names a temporary file uniquely among the threads of this process.
std::string temporary_name(const std::string& folder, const std::string& uid) {
  static std::atomic<unsigned long long> counter{0};
  return folder + "/" + kTemporaryPrefix + std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" + uid;
}

unsigned short check_native_pixel_header(DcmDataset& ds, const std::string& uid, std::string& reason);

// Reads the stored file's header (values over 1 KiB stay on disk) and checks it.
unsigned short check_stored(const std::string& path, const std::string& request_uid, std::string& reason) {
  DcmFileFormat file;
  const OFCondition parsed = file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, 1024, ERM_autoDetect);
  if (parsed.bad()) {
    reason = std::string("cannot parse the dataset: ") + parsed.text();
    return kStatusCannotUnderstand;
  }
  DcmDataset& ds = *file.getDataset();
  OFString uid;
  if (ds.findAndGetOFString(DCM_SOPInstanceUID, uid).bad() || trimmed(uid) != request_uid) {
    reason = "the dataset's SOP Instance UID '" + trimmed(uid) + "' is not the request's";
    return kStatusDatasetMismatch;
  }
  if (!ds.tagExists(DCM_PixelData) && !ds.tagExists(DCM_FloatPixelData) && !ds.tagExists(DCM_DoubleFloatPixelData)) {
    reason = "no pixel data in an image storage SOP instance";
    return kStatusDatasetMismatch;
  }
  return check_native_pixel_header(ds, request_uid, reason);
}

// Uncompressed pixel data is described by its header alone: absurd values (no Rows, 12
// bits allocated, 4 samples per pixel, a frame count the data cannot hold) are refused at
// receipt with the reader's own checks, not queued to fail later. Compressed data is left
// to the decoders, whose output the header describes.
unsigned short check_native_pixel_header(DcmDataset& ds, const std::string& uid, std::string& reason) {
  if (DcmXfer(ds.getOriginalXfer()).isEncapsulated()) return kStatusSuccess;
  const dicom::PixelLayout::Kind kind = ds.tagExists(DCM_FloatPixelData)         ? dicom::PixelLayout::Kind::Float32
                                        : ds.tagExists(DCM_DoubleFloatPixelData) ? dicom::PixelLayout::Kind::Float64
                                                                                 : dicom::PixelLayout::Kind::Integer;
  try {
    const dicom::PixelLayout layout = dicom::read_layout(ds, kind, "instance " + uid);
    dicom::validate(layout, "instance " + uid);
    DcmElement* pixels = nullptr;
    const DcmTagKey tag = kind == dicom::PixelLayout::Kind::Float32   ? DCM_FloatPixelData
                          : kind == dicom::PixelLayout::Kind::Float64 ? DCM_DoubleFloatPixelData
                                                                      : DCM_PixelData;
    if (ds.findAndGetElement(tag, pixels).good() && pixels && int64_t(pixels->getLength()) < layout.total_bytes()) {
      reason = "pixel data of " + std::to_string(pixels->getLength()) + " bytes, where the header's Rows, Columns, " +
               "frames and bits need " + std::to_string(layout.total_bytes());
      return kStatusDatasetMismatch;
    }
  } catch (const ImageError& e) {
    reason = e.what();
    return kStatusDatasetMismatch;
  }
  return kStatusSuccess;
}

}  // namespace

bool is_image_storage_sop_class(const std::string& uid) {
  for (int i = 0; i < numberOfDcmImageSOPClassUIDs; ++i)
    if (dcmImageSOPClassUIDs[i] && uid == dcmImageSOPClassUIDs[i]) return true;
  return false;
}

bool is_safe_uid(const std::string& uid) {
  if (uid.empty() || uid.size() > 64 || uid.front() == '.') return false;
  for (char c : uid)
    if (!(c == '.' || (c >= '0' && c <= '9'))) return false;
  return true;
}

DcmSCPConfig make_store_config(const std::string& ae_title) {
  DcmSCPConfig config;
  config.setAETitle(ae_title.c_str());
  config.setHostLookupEnabled(OFFalse);
  config.setACSETimeout(30);
  config.setDIMSETimeout(60);
  config.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
  OFList<OFString> syntaxes;
  for (const char* ts : kTransferSyntaxes) syntaxes.push_back(ts);
  OFList<OFString> verification;
  verification.push_back(UID_LittleEndianExplicitTransferSyntax);
  verification.push_back(UID_LittleEndianImplicitTransferSyntax);
  config.addPresentationContext(UID_VerificationSOPClass, verification);
  for (int i = 0; i < numberOfDcmImageSOPClassUIDs; ++i)
    if (dcmImageSOPClassUIDs[i]) config.addPresentationContext(dcmImageSOPClassUIDs[i], syntaxes);
  return config;
}

std::string StoreScp::sender() const { return "AE '" + calling_ae_ + "' at " + peer_; }

void StoreScp::notifyAssociationRequest(const T_ASC_Parameters& params, DcmSCPActionType& action) {
  DcmThreadSCP::notifyAssociationRequest(params, action);
  calling_ae_ = trimmed(params.DULparams.callingAPTitle);
  peer_ = params.DULparams.callingPresentationAddress;
  // The contexts the negotiation will reject, in one line naming the sender
  // (SCUs such as storescu propose every storage SOP class they know).
  std::set<std::string> refused;
  const int count = ASC_countPresentationContexts(const_cast<T_ASC_Parameters*>(&params));
  for (int i = 0; i < count; ++i) {
    T_ASC_PresentationContext pc;
    if (ASC_getPresentationContext(const_cast<T_ASC_Parameters*>(&params), i, &pc).bad()) continue;
    const std::string sop = pc.abstractSyntax;
    if (sop != UID_VerificationSOPClass && !is_image_storage_sop_class(sop))
      refused.insert(dcmFindNameOfUID(sop.c_str(), sop.c_str()));
  }
  if (!refused.empty()) {
    std::string names;
    for (const std::string& n : refused) names += (names.empty() ? "" : ", ") + n;
    OFLOG_INFO(serve_logger(), "refusing presentation contexts of " << sender()
                                   << " for SOP classes that are not image storage: " << names);
  }
}

OFBool StoreScp::checkCallingAETitleAccepted(const OFString& calling_ae) {
  if (setup_.allowed_callers.empty() || setup_.allowed_callers.count(trimmed(calling_ae))) return OFTrue;
  ++setup_.counters->refused_associations;
  OFLOG_WARN(serve_logger(), "refusing association from AE '" << trimmed(calling_ae) << "' at " << peer_
                                                              << ": calling AE title not in --allow");
  return OFFalse;
}

OFCondition StoreScp::handleIncomingCommand(T_DIMSE_Message* message, const DcmPresentationContextInfo& context) {
  if (message->CommandField == DIMSE_C_STORE_RQ) return handle_store(message->msg.CStoreRQ, context);
  return DcmThreadSCP::handleIncomingCommand(message, context);
}

OFCondition StoreScp::handle_store(T_DIMSE_C_StoreRQ& request, const DcmPresentationContextInfo& context) {
  const std::string sop_class = request.AffectedSOPClassUID;
  const std::string sop_uid = request.AffectedSOPInstanceUID;
  unsigned short status = kStatusSuccess;
  OFCondition network = EC_Normal;
  if (!is_image_storage_sop_class(sop_class) || sop_class != trimmed(context.abstractSyntax)) {
    // The dataset must still be read off the wire before answering.
    DcmDataset* discarded = nullptr;
    network = receiveSTORERequest(request, context.presentationContextID, discarded);
    delete discarded;
    status = kStatusSopClassNotSupported;
    OFLOG_WARN(serve_logger(), "refusing C-STORE of " << sop_uid << " from " << sender() << ": SOP class "
                                                      << sop_class << " not supported (status 0x0122)");
  } else {
    status = store_instance(request, context.presentationContextID, network);
  }
  if (network.bad()) return network;  // the association is gone: nothing to answer
  if (status != kStatusSuccess) ++setup_.counters->rejected;
  return sendSTOREResponse(context.presentationContextID, request, status);
}

unsigned short StoreScp::store_instance(T_DIMSE_C_StoreRQ& request, T_ASC_PresentationContextID context_id,
                                        OFCondition& network) {
  const std::string sop_uid = request.AffectedSOPInstanceUID;
  const bool safe = is_safe_uid(sop_uid);
  const std::string tmp = temporary_name(setup_.incoming, safe ? sop_uid : "invalid");
  network = receiveSTORERequest(request, context_id, OFString(tmp.c_str()));
  if (network.bad()) {
    OFLOG_WARN(serve_logger(), "transfer of " << sop_uid << " from " << sender() << " broke off: " << network.text());
    std::remove(tmp.c_str());
    return kStatusCannotUnderstand;
  }
  std::string reason;
  unsigned short status = safe ? check_stored(tmp, sop_uid, reason) : kStatusDatasetMismatch;
  if (!safe) reason = "SOP Instance UID '" + sop_uid + "' is not a valid UID";
  if (status == kStatusSuccess) {
    try {
      durable_commit(tmp, setup_.incoming + "/" + sop_uid + ".dcm");
    } catch (const std::exception& e) {
      reason = e.what();
      status = kStatusOutOfResources;
    }
  }
  if (status != kStatusSuccess) {
    std::remove(tmp.c_str());
    char code[8];
    std::snprintf(code, sizeof code, "0x%04X", status);
    OFLOG_WARN(serve_logger(), "rejecting " << sop_uid << " from " << sender() << ": " << reason << " (status "
                                            << code << ")");
    return status;
  }
  ++setup_.counters->received;
  OFLOG_INFO(serve_logger(), "stored " << sop_uid << " from " << sender());
  if (setup_.on_stored) setup_.on_stored();
  return kStatusSuccess;
}

}  // namespace mm::serve
