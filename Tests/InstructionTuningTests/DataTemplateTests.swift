import Foundation
import XCTest
import Tensors
@testable import InstructionTuning

final class DataTemplateTests: DataTestCase {
    func testAlpacaPromptsMatchTheContract() {
        XCTAssertEqual(PromptTemplate.alpaca.prompt(instruction: "Add the two numbers.", input: "2 and 3"),
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            + "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the two numbers."
            + "\n\n### Input:\n2 and 3\n\n### Response:\n")
        XCTAssertEqual(PromptTemplate.alpaca.prompt(instruction: "Say hello.", input: ""),
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            + "request.\n\n### Instruction:\nSay hello.\n\n### Response:\n")
        XCTAssertEqual(PromptTemplate.alpaca.prompt(for: InstructionRecord(instruction: "Say hello.", output: "Hi")),
                       PromptTemplate.alpaca.prompt(instruction: "Say hello.", input: ""))
        XCTAssertNoThrow(try PromptTemplate.alpaca.validate(source: "alpaca"))
    }

    func testSubstitutionIsSinglePass() {
        let template = PromptTemplate(promptInput: "I={instruction}|N={input}|I again={instruction}",
                                      promptNoInput: "only {instruction}; {other} {instr")
        XCTAssertEqual(template.prompt(instruction: "use {input} here", input: "see {instruction}"),
                       "I=use {input} here|N=see {instruction}|I again=use {input} here")
        XCTAssertEqual(template.prompt(instruction: "{instruction}", input: ""), "only {instruction}; {other} {instr")
        // A placeholder beside non-ASCII text and a combining mark is still found.
        let accented = PromptTemplate(promptInput: "é{input}\u{301}{instruction}", promptNoInput: "{instruction}")
        XCTAssertEqual(accented.prompt(instruction: "x", input: "ü"), "éü\u{301}x")
    }

    func testLoadsAlpacaLoraTemplateFile() throws {
        // alpaca-lora's templates/alpaca_short.json, with its extra keys.
        let file = try write("short.json", """
            {
                "description": "A shorter template to experiment with.",
                "prompt_input": "### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n",
                "prompt_no_input": "### Instruction:\\n{instruction}\\n\\n### Response:\\n",
                "response_split": "### Response:"
            }
            """)
        let template = try PromptTemplate.load(path: file)
        XCTAssertEqual(template.prompt(instruction: "Add.", input: "1 2"), "### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:\n")
        XCTAssertEqual(template.prompt(instruction: "Hi.", input: ""), "### Instruction:\nHi.\n\n### Response:\n")
        XCTAssertEqual(try PromptTemplate.named(file), template)
        XCTAssertEqual(try PromptTemplate.named("alpaca"), .alpaca)
    }

    func testTemplateErrors() throws {
        let cases: [(String, String)] = [
            ("{\"prompt_no_input\": \"{instruction}\"}", "the template has no \"prompt_input\" key"),
            ("{\"prompt_input\": \"{instruction} {input}\"}", "the template has no \"prompt_no_input\" key"),
            ("{\"prompt_input\": 3, \"prompt_no_input\": \"{instruction}\"}", "\"prompt_input\" is a number, not a string"),
            ("{\"prompt_input\": \"{instruction} {input}\", \"prompt_no_input\": null}", "\"prompt_no_input\" is null, not a string"),
            ("{\"prompt_input\": \"{input}\", \"prompt_no_input\": \"{instruction}\"}", "\"prompt_input\" lacks the {instruction} placeholder"),
            ("{\"prompt_input\": \"{instruction}\", \"prompt_no_input\": \"{instruction}\"}", "\"prompt_input\" lacks the {input} placeholder"),
            ("{\"prompt_input\": \"{instruction}{input}\", \"prompt_no_input\": \"Go:\"}", "\"prompt_no_input\" lacks the {instruction} placeholder"),
            ("{\"prompt_input\": \"{instruction}{input}\", \"prompt_no_input\": \"{instruction}{input}\"}", "\"prompt_no_input\" holds {input}"),
            ("[\"{instruction}\"]", "found an array"),
            ("{\n  \"prompt_input\": \"{instruction}{input}\",\n  \"prompt_no_input\" \"{instruction}\"\n}", "malformed JSON at line 3, column 21"),
        ]
        for (n, (text, message)) in cases.enumerated() {
            let file = try write("template\(n).json", text)
            assertError(try PromptTemplate.load(path: file), contains: [file + ": ", message])
        }
        assertError(try PromptTemplate.load(path: directory + "/none.json"), contains: ["none.json: no such template file"])
        assertError(try PromptTemplate.named("vicuna"), contains: ["unknown template \"vicuna\"", "alpaca"])
    }
}
