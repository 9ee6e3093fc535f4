using System.CommandLine;
using System.Text;
using GptSharp.Tokenization;

namespace GptSharp.Cli.Commands;

/// <summary><c>gptsharp tokenize (--text T | --file F) [--allow-special] [--json]</c>: GPT-2 token ids of a text.</summary>
internal static class TokenizeCommand
{
    /// <param name="output">Where the ids go (standard output when null); tests pass a writer.</param>
    public static Command Create(TextWriter? output = null)
    {
        var text = new Option<string>("--text") { Description = "The text to encode." };
        var file = new Option<FileInfo>("--file") { Description = "A UTF-8 file to encode, exactly as it is (nothing added or stripped)." };
        var allowSpecial = new Option<bool>("--allow-special")
        {
            Description = "Encode <|endoftext|> as token 50256 (without it, special-token text is encoded as plain text).",
        };
        var json = new Option<bool>("--json") { Description = "Print the ids as a JSON array on one line (default: separated by spaces)." };

        var command = new Command("tokenize", "Print the GPT-2 token ids of a text (the same as tiktoken's gpt2 encoding).");
        command.Options.Add(text);
        command.Options.Add(file);
        command.Options.Add(allowSpecial);
        command.Options.Add(json);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            Run(parse.GetValue(text), parse.GetValue(file)?.FullName, parse.GetValue(allowSpecial), parse.GetValue(json), output ?? Console.Out);
            return 0;
        }));
        return command;
    }

    /// <summary>The command's work: encodes and writes one line of ids.</summary>
    public static void Run(string? text, string? file, bool allowSpecial, bool json, TextWriter output)
    {
        if ((text == null) == (file == null))
            throw new ArgumentException("tokenize needs exactly one of --text or --file.");
        var tokenizer = Gpt2Tokenizer.Instance;
        int[] ids;
        if (text != null)
        {
            ids = allowSpecial ? tokenizer.Encode(text, Gpt2Tokenizer.AllSpecialTokens) : tokenizer.EncodeOrdinary(text);
        }
        else
        {
            if (!File.Exists(file)) throw new FileNotFoundException($"--file {file}: no such file.");
            byte[] bytes = File.ReadAllBytes(file!);
            int invalid = Gpt2Tokenizer.IndexOfInvalidUtf8(bytes);
            if (invalid >= 0)
                throw new InvalidDataException($"--file {file} is not valid UTF-8: byte 0x{bytes[invalid]:x2} at offset {invalid} does not start a well-formed sequence.");
            // A big file is encoded on all cores (the tokenizer chooses by size).
            ids = allowSpecial ? tokenizer.Encode(bytes, Gpt2Tokenizer.AllSpecialTokens) : tokenizer.EncodeOrdinary(bytes);
        }

        var line = new StringBuilder(ids.Length * 6 + 2);
        if (json) line.Append('[');
        for (int i = 0; i < ids.Length; i++)
        {
            if (i > 0) line.Append(json ? "," : " ");
            line.Append(ids[i]);
        }
        if (json) line.Append(']');
        output.WriteLine(line);
        output.Flush();
    }
}
