#pragma once
// One association of mm-serve's C-STORE SCP (a DCMTK DcmThreadSCP run on its
// own thread by the listener): refuses calling AE titles outside the
// allow-list, stores each instance of an image storage SOP class durably in
// the incoming folder, and only then answers success.
//
// DIMSE statuses (docs/mm-serve.md): 0x0000 stored; 0x0122 SOP class not
// supported; 0xA900 the dataset does not match the request or holds no pixel
// data; 0xC000 cannot parse; 0xA700 cannot store (disk).
#include <atomic>
#include <functional>
#include <set>
#include <string>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/scpthrd.h"

namespace mm::serve {

struct ServeCounters {
  std::atomic<long long> received{0}, rejected{0}, refused_associations{0};
  std::atomic<long long> classified{0}, failed{0}, no_image{0}, duplicates{0}, series_reports{0},
      saliency_captures{0}, forwarded{0};
};

struct StoreSetup {
  std::string incoming;                   // where received instances go, as <SOP Instance UID>.dcm
  std::set<std::string> allowed_callers;  // calling AE titles; empty: everyone
  ServeCounters* counters = nullptr;
  std::function<void()> on_stored;        // wakes the classifier
};

// The image storage SOP classes (DCMTK's list) and the transfer syntaxes the
// readers decode (lib/imaging/dicom_reader.cpp), offered for each of them.
bool is_image_storage_sop_class(const std::string& uid);
DcmSCPConfig make_store_config(const std::string& ae_title);

// Names of files being received start with this (folder_entries skips them).
inline const char* const kTemporaryPrefix = ".tmp-";

// SOP Instance UIDs name files: only digits and dots, at most 64 characters.
bool is_safe_uid(const std::string& uid);

class StoreScp : public DcmThreadSCP {
 public:
  explicit StoreScp(const StoreSetup& setup) : setup_(setup) {}

 protected:
  OFCondition handleIncomingCommand(T_DIMSE_Message* message, const DcmPresentationContextInfo& context) override;
  OFBool checkCallingAETitleAccepted(const OFString& calling_ae) override;
  void notifyAssociationRequest(const T_ASC_Parameters& params, DcmSCPActionType& action) override;

 private:
  OFCondition handle_store(T_DIMSE_C_StoreRQ& request, const DcmPresentationContextInfo& context);
  // Receives into a temporary file and checks it; returns the DIMSE status.
  unsigned short store_instance(T_DIMSE_C_StoreRQ& request, T_ASC_PresentationContextID context_id,
                                OFCondition& network);
  std::string sender() const;

  const StoreSetup& setup_;
  std::string calling_ae_, peer_;
};

}  // namespace mm::serve
