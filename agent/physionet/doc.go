// Package physionet turns the PhysioNet/Computing in Cardiology Challenge
// 2012 data set ("Predicting Mortality of ICU Patients", training set A:
// 4,000 ICU stays, first 48 hours) into what the rest of Cohort consumes:
// normalized FHIR records (fhir.Sink), FHIR R4 Bulk Data NDJSON files, and
// live bedside-device telemetry over MQTT.
//
// # Reading
//
// ReadStays streams set-a.tar.gz without extracting it and delivers one
// Stay per <RecordID>.txt file, sorted by RecordID, with its line of
// Outcomes-a.txt joined. A stay file holds Time,Parameter,Value rows, the
// time being HH:MM since ICU admission. The general descriptors RecordID,
// Age, Gender, Height, ICUType and Weight are recorded at 00:00 and become
// Stay fields (-1: missing); Height and Weight rows after the first one at
// 00:00 are time series like the rest. Rows become Stay.Rows, except rows
// that are counted in Stats.Skipped and dropped: a value of -1
// ("missing-value"), a parameter the table below does not know
// ("unknown-parameter"), a row that is not three fields or whose value is
// not a finite number ("malformed-row"), a time that is not HH:MM
// ("bad-time"), and a repeated descriptor ("duplicate-descriptor"). Values
// are kept as recorded: the data has a few implausible ones (a temperature
// of -17.8, a pH of 735) that are left for feature extraction to handle.
//
// # Mapping to LOINC
//
// Params lists every parameter with its LOINC code and the UCUM unit the
// values are in (PhysioNet's documented units, checked against the values):
//
//	HR           8867-4   Heart rate                                   /min
//	RespRate     9279-1   Respiratory rate                             /min
//	Temp         8310-5   Body temperature                             Cel
//	NISysABP     8480-6   Systolic blood pressure                      mm[Hg]
//	NIDiasABP    8462-4   Diastolic blood pressure                     mm[Hg]
//	NIMAP        8478-0   Mean blood pressure                          mm[Hg]
//	SysABP       76215-3  Invasive Systolic blood pressure             mm[Hg]
//	DiasABP      76213-8  Invasive Diastolic blood pressure            mm[Hg]
//	MAP          76214-6  Invasive Mean blood pressure                 mm[Hg]
//	SaO2         2708-6   Oxygen saturation in Arterial blood          %
//	GCS          9269-2   Glasgow coma score total                     {score}
//	Glucose      2345-7   Glucose [Mass/volume] in Serum or Plasma     mg/dL
//	Lactate      2524-7   Lactate [Moles/volume] in Serum or Plasma    mmol/L
//	pH           2744-1   pH of Arterial blood                         [pH]
//	PaCO2        2019-8   Carbon dioxide [Partial pressure] in Arterial blood  mm[Hg]
//	PaO2         2703-7   Oxygen [Partial pressure] in Arterial blood  mm[Hg]
//	FiO2         3150-0   Inhaled oxygen concentration                 1 (fraction)
//	HCO3         1963-8   Bicarbonate [Moles/volume] in Serum or Plasma  mmol/L
//	HCT          4544-3   Hematocrit [Volume Fraction] of Blood by Automated count  %
//	WBC          6690-2   Leukocytes [#/volume] in Blood by Automated count  10*3/uL
//	Platelets    777-3    Platelets [#/volume] in Blood by Automated count   10*3/uL
//	BUN          3094-0   Urea nitrogen [Mass/volume] in Serum or Plasma  mg/dL
//	Creatinine   2160-0   Creatinine [Mass/volume] in Serum or Plasma  mg/dL
//	Na           2951-2   Sodium [Moles/volume] in Serum or Plasma     mmol/L
//	K            2823-3   Potassium [Moles/volume] in Serum or Plasma  mmol/L
//	Mg           19123-9  Magnesium [Mass/volume] in Serum or Plasma   mg/dL
//	Albumin      1751-7   Albumin [Mass/volume] in Serum or Plasma     g/dL
//	ALP          6768-6   Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma  U/L
//	ALT          1742-6   Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma  U/L
//	AST          1920-8   Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma  U/L
//	Bilirubin    1975-2   Bilirubin.total [Mass/volume] in Serum or Plasma  mg/dL
//	Cholesterol  2093-3   Cholesterol [Mass/volume] in Serum or Plasma  mg/dL
//	TroponinI    10839-9  Troponin I.cardiac [Mass/volume] in Serum or Plasma  ug/L
//	TroponinT    6598-7   Troponin T.cardiac [Mass/volume] in Serum or Plasma  ug/L
//	Urine        9187-6   Urine output                                 mL
//	Weight       29463-7  Body weight                                  kg
//	Height       8302-2   Body height                                  cm
//	MechVent     (none)   unmapped: counted in Stats.Unmapped, never emitted
//
// Every code passes the LOINC mod-10 check digit (tested). Codes to treat
// with care:
//
//   - SysABP, DiasABP, MAP: the invasive codes are 76215-3, 76213-8 and
//     76214-6. The forms 76215-4, 76213-9 and 76214-7 that circulate have
//     wrong check digits, and agent/device refuses them.
//   - NISysABP, NIDiasABP, NIMAP use the generic vital-sign codes that FHIR
//     vital-sign profiles and Synthea use; the method-specific ones
//     (76534-7, 76535-4, 76536-2) would say "non-invasive" explicitly.
//   - Mg: PhysioNet documents mmol/L, which would be 2601-3 (moles per
//     volume), but the values (median 2.0, range 0.6-9.9) are mg/dL, so the
//     table uses 19123-9 (mass per volume) with mg/dL. Not certain.
//   - SaO2 is arterial blood-gas saturation (2708-6), not pulse oximetry
//     (59408-5): it is sparse (about 2 rows per stay), like the blood gases.
//   - Lactate: PhysioNet does not say which specimen; 2524-7 is serum or
//     plasma, 2518-9 would be arterial blood. Not certain.
//   - FiO2 is recorded as a fraction (0.21-1), so its unit is UCUM "1"
//     rather than the "%" LOINC shows as the example unit.
//   - Urine (9187-6) is the volume charted since the previous charting; the
//     interval is not in the data.
//   - TroponinI and TroponinT are in ug/L as PhysioNet documents; the
//     values were not checked against another source.
//   - MechVent (1 while ventilated) has no LOINC code that means "on
//     mechanical ventilation". 19994-3 is the ventilator's oxygen setting
//     ("Oxygen/Total gas setting, volume fraction, Ventilator"): mapping
//     MechVent to it would read every ventilated hour as 100 % oxygen, so
//     MechVent stays unmapped.
//
// # FHIR records
//
// ToRecords and Import emit, per stay, a Patient "physionet-<RecordID>",
// an Encounter "physionet-<RecordID>-icu" of class ICU and one Observation
// per mapped value; WriteNDJSON writes the same records as FHIR R4 NDJSON.
// PhysioNet gives no dates: each stay is admitted at a time the caller
// chooses (DefaultAdmit: 2012-01-01T00:00:00Z), the birth date is the
// admission minus the age (PhysioNet gives the age only, apparently capped
// at 90), and the death time is unknown (Outcome.Survival is not used, and
// a death after discharge does not make the Patient deceased). The
// Encounter class is "ICU", as fhir.Encounter documents it, written with
// the v3-ActCode system; ICU is not a v3-ActCode concept (it is a
// v3-RoleCode location type), so a server that validates terminology
// flags it: switch EncounterClass to "ACUTE" (inpatient acute) if that
// matters. Values are not checked for plausibility here; the FHIR reader's
// default options reject the few impossible vital signs (a temperature
// below 20 Cel) when the NDJSON is read back.
//
// # Replay
//
// Replay publishes the vital-sign rows of chosen stays as bedside-device
// telemetry over MQTT under the contract of package agent/device (topic
// cohort/<site>/devices/<device-id>/observations, QoS 1, one JSON reading
// per message), paced on an injected Clock at a chosen speed, with a
// bounded number of unacknowledged publishes. The receiver derives a
// reading's id from its device, time and LOINC code, so two rows of one
// parameter at the same minute (about 2,000 of set A's 1.1 million vital
// rows) become one stored observation there.
//
// Data: Silva I, Moody G, Scott DJ, Celi LA, Mark RG. Predicting
// In-Hospital Mortality of ICU Patients: The PhysioNet/Computing in
// Cardiology Challenge 2012. Comput Cardiol 2012. ODC-By 1.0.
package physionet
